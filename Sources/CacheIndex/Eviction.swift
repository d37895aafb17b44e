import Foundation
import GRDB

/// A cached object eviction may remove: a blob row not protected by a pin.
public struct EvictionCandidate: Sendable, Equatable {
    /// `algorithm:hex`.
    public var digest: String
    /// Size in bytes.
    public var size: Int64
    public var lastAccessAt: Date
    public var createdAt: Date
}

/// Names of persisted counters (`counter(_:)`).
public enum CacheCounter {
    /// Objects (blob rows, manifests included) removed by eviction, ever.
    public static let evictions = "evictions"
    /// Bytes removed by eviction, ever.
    public static let evictedBytes = "evicted_bytes"
    /// Requests answered from the cache (blobs and manifests).
    public static let hits = "hits"
    /// Blob or manifest requests that had to go upstream.
    public static let misses = "misses"
}

extension CacheIndex {
    /// Least recently used blob rows outside the pinned closure, oldest access first (ties by digest),
    /// committed no later than `createdBefore` (younger content is never a candidate).
    /// - Parameters:
    ///   - after: resume after this candidate (keyset pagination; candidates the caller skipped stay behind it).
    ///   - limit: at most this many rows.
    /// - Throws: GRDB's `DatabaseError`.
    public func evictionCandidates(after: EvictionCandidate?, createdBefore: Date, limit: Int) throws -> [EvictionCandidate] {
        try pool.read { db in
            var sql = Self.pinnedClosureCTE + """
                SELECT digest, size, lastAccessAt, createdAt FROM blob
                WHERE createdAt <= ? AND digest NOT IN (SELECT d FROM closure)
                """
            var arguments: StatementArguments = [createdBefore]
            if let after {
                sql += " AND (lastAccessAt, digest) > (?, ?)"
                arguments += [after.lastAccessAt, after.digest]
            }
            sql += " ORDER BY lastAccessAt, digest LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map {
                EvictionCandidate(digest: $0["digest"], size: $0["size"], lastAccessAt: $0["lastAccessAt"], createdAt: $0["createdAt"])
            }
        }
    }

    /// Deletes the rows of `digests` in one transaction, re-checking under the write lock that each is still
    /// outside the pinned closure and older than `createdBefore`; manifest and child rows cascade, tag and
    /// referrers rows stay (they re-resolve online). Adds to the `evictions` / `evicted_bytes` counters.
    ///
    /// The caller unlinks the files afterwards: a crash in between leaves a file without a row, which start-up
    /// reconciliation removes — never a row without its file.
    /// - Returns: the rows actually deleted, with their sizes in bytes.
    /// - Throws: GRDB's `DatabaseError` (nothing is deleted then).
    public func evict(_ digests: [String], createdBefore: Date) throws -> [(digest: String, size: Int64)] {
        guard !digests.isEmpty else { return [] }
        let removed = try pool.write { db in
            let pinned = try Self.pinnedDigests(db)
            var removed: [(digest: String, size: Int64)] = []
            for digest in digests where !pinned.contains(digest) {
                guard let size = try Int64.fetchOne(db, sql: "SELECT size FROM blob WHERE digest = ? AND createdAt <= ?",
                                                    arguments: [digest, createdBefore]) else { continue }
                try db.execute(sql: "DELETE FROM blob WHERE digest = ?", arguments: [digest])
                removed.append((digest, size))
            }
            if !removed.isEmpty {
                try Self.add([CacheCounter.evictions: Int64(removed.count), CacheCounter.evictedBytes: removed.reduce(0) { $0 + $1.size }], db)
            }
            return removed
        }
        memory.forget(removed.map(\.digest))
        return removed
    }

    /// Writes a batch of access times (`digest` → time; a row only moves forward) and counter increments in
    /// one transaction. Rows that no longer exist are ignored.
    /// - Throws: GRDB's `DatabaseError`.
    public func recordAccesses(_ times: [String: Date], counters: [String: Int64] = [:]) throws {
        guard !times.isEmpty || !counters.isEmpty else { return }
        try pool.write { db in
            let update = try db.cachedStatement(sql: "UPDATE blob SET lastAccessAt = ? WHERE digest = ? AND lastAccessAt < ?")
            for (digest, time) in times { try update.execute(arguments: [time, digest, time]) }
            try Self.add(counters, db)
        }
    }

    /// The value of a persisted counter (0 when never written). Names: `CacheCounter`.
    /// - Throws: GRDB's `DatabaseError`.
    public func counter(_ name: String) throws -> Int64 {
        try pool.read { db in try Int64.fetchOne(db, sql: "SELECT value FROM counter WHERE name = ?", arguments: [name]) ?? 0 }
    }

    /// Adds `deltas` to persisted counters in one transaction.
    /// - Throws: GRDB's `DatabaseError`.
    public func addToCounters(_ deltas: [String: Int64]) throws {
        guard !deltas.isEmpty else { return }
        try pool.write { db in try Self.add(deltas, db) }
    }

    static func add(_ deltas: [String: Int64], _ db: Database) throws {
        for (name, delta) in deltas where delta != 0 {
            try db.execute(sql: "INSERT INTO counter(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                           arguments: [name, delta])
        }
    }

    /// Inserts many blob rows in one transaction (existing rows are kept): for preloads and benchmarks.
    /// - Throws: GRDB's `DatabaseError`.
    public func insertBlobs(_ records: [BlobRecord]) throws {
        try pool.write { db in
            for r in records { try r.insert(db, onConflict: .ignore) }
        }
    }
}
