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

/// Cache size and, from a running server, its counters since it started.
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
    /// True when the numbers come from a running server (counters below are set).
    public var serverRunning: Bool
    /// When the server's counters started.
    public var since: Date?
    /// Manifest and blob requests answered from the cache / fetched upstream, since `since`.
    public var hits: Int?
    public var misses: Int?
    /// Entries evicted since `since`, and their bytes.
    public var evictions: Int?
    public var evictedBytes: Int64?
    /// The running server's start-up reconciliation: "running" or what it did.
    public var reconciliation: String?

    /// hits / (hits + misses), nil without a server or without requests.
    public var hitRatio: Double? {
        guard let hits, let misses, hits + misses > 0 else { return nil }
        return Double(hits) / Double(hits + misses)
    }

    public var text: String {
        let notRunning = "n/a (no server running)"
        var rows = [
            ["blobs:", "\(blobs)"],
            ["manifests:", "\(manifests)"],
            ["tags:", "\(tags)"],
            ["bytes:", "\(bytes) (\(ByteFormat.human(bytes)))"],
            ["limit:", limitBytes.map { "\($0) (\(ByteFormat.human($0)))" } ?? "none"],
        ]
        if serverRunning, let hits, let misses {
            let ratio = hitRatio.map { String(format: "%.1f%%", $0 * 100) } ?? "n/a (no requests yet)"
            rows.append(["hit ratio:", "\(ratio) (\(hits) hits, \(misses) misses since \(since?.isoText ?? "start"))"])
            rows.append(["evictions:", "\(evictions ?? 0) (\(ByteFormat.human(evictedBytes ?? 0)))"])
            if let reconciliation { rows.append(["reconciliation:", reconciliation]) }
        } else {
            rows.append(["hit ratio:", notRunning])
            rows.append(["evictions:", notRunning])
        }
        let width = rows.map { $0[0].count }.max() ?? 0
        return rows.map { $0[0].padding(toLength: width, withPad: " ", startingAt: 0) + " " + $0[1] }.joined(separator: "\n")
    }
}

extension CacheAdmin {
    /// Counts from the index; counters from the running server when there is one.
    /// - Throws: a database error.
    public func stats() throws -> StatsReport {
        let t = try index.totals()
        var r = StatsReport(blobs: t.blobs, manifests: t.manifests, tags: t.tags, bytes: t.bytes, limitBytes: sizeLimit,
                            serverRunning: isServer)
        if let counters = mirror?.counters {
            r.since = counters.since
            r.hits = counters.hits
            r.misses = counters.misses
            r.evictions = counters.evictions
            r.evictedBytes = counters.evictedBytes
            r.reconciliation = reconciliation?.statusText
        }
        return r
    }
}
