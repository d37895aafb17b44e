import CacheIndex
import Foundation

/// `cove stats`.
public struct StatsCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        public init() {}
    }

    public typealias Response = StatsReport
    public static let name = "stats"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> StatsReport {
        try cache.stats()
    }
}

/// Cache size, limit and counters. Hits, misses and evictions are totals kept in the index (a running server
/// adds what it has not flushed yet), so they survive restarts and read the same with or without a server.
public struct StatsReport: AdminResponse, Equatable {
    /// Blob rows (manifests and referrers lists included).
    public var blobs: Int
    /// Manifest rows.
    public var manifests: Int
    /// Tag rows.
    public var tags: Int
    /// Bytes the index records (the sum of blob sizes).
    public var bytes: Int64
    /// Configured size limit in bytes; nil for none.
    public var limitBytes: Int64?
    /// True when the numbers come from a running server.
    public var serverRunning: Bool
    /// Manifest and blob requests answered from the cache / that went upstream, in total.
    public var hits: Int64
    public var misses: Int64
    /// Objects evicted in total, and their bytes.
    public var evictions: Int64
    public var evictedBytes: Int64
    /// The running server's start-up reconciliation: "running" or what it did.
    public var reconciliation: String?

    /// hits / (hits + misses), nil before any request.
    public var hitRatio: Double? {
        hits + misses > 0 ? Double(hits) / Double(hits + misses) : nil
    }

    public var text: String {
        let ratio = hitRatio.map { String(format: "%.1f%%", $0 * 100) } ?? "n/a (no requests yet)"
        var rows = [
            ["blobs:", "\(blobs)"],
            ["manifests:", "\(manifests)"],
            ["tags:", "\(tags)"],
            ["bytes:", "\(bytes) (\(ByteFormat.human(bytes)))"],
            ["limit:", limitBytes.map { "\($0) (\(ByteFormat.human($0)))" } ?? "none"],
            ["hit ratio:", "\(ratio) (\(hits) hits, \(misses) misses in total)"],
            ["evictions:", "\(evictions) (\(ByteFormat.human(evictedBytes)))"],
            ["server:", serverRunning ? "running" : "not running"],
        ]
        if let reconciliation { rows.append(["reconciliation:", reconciliation]) }
        let width = rows.map { $0[0].count }.max() ?? 0
        return rows.map { $0[0].padding(toLength: width, withPad: " ", startingAt: 0) + " " + $0[1] }.joined(separator: "\n")
    }
}

extension CacheAdmin {
    /// Counts and counters from the index, plus what a running server has not flushed yet.
    /// - Throws: a database error.
    public func stats() throws -> StatsReport {
        let t = try index.totals()
        var (hits, misses) = (try index.counter(CacheCounter.hits), try index.counter(CacheCounter.misses))
        if let pending = mirror?.pendingRequestCounts {
            hits += pending.hits
            misses += pending.misses
        }
        return StatsReport(blobs: t.blobs, manifests: t.manifests, tags: t.tags, bytes: t.bytes, limitBytes: sizeLimit,
                           serverRunning: isServer, hits: hits, misses: misses,
                           evictions: try index.counter(CacheCounter.evictions), evictedBytes: try index.counter(CacheCounter.evictedBytes),
                           reconciliation: reconciliation?.statusText)
    }
}
