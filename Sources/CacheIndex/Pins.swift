import Foundation
import GRDB

/// A pin: content eviction never removes. Pinning an index pins its children (the closure follows
/// `manifestChild`); pinning a tag protects both the digest it had when pinned and whatever the `tag` table
/// maps it to now.
public struct PinRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "pin"
    /// Registry identity as the cache keys it (e.g. `docker.io`, `host:port`).
    public var registry: String
    /// Repository as sent upstream (e.g. `library/busybox`).
    public var repository: String
    /// The tag, or the digest (`sha256:…`) for a pin by digest.
    public var reference: String
    /// The manifest digest the reference resolved to when pinned; nil when it was not cached yet (a tag pin
    /// then protects whatever the tag resolves to once filled).
    public var digest: String?
    public var pinnedAt: Date

    public init(registry: String, repository: String, reference: String, digest: String?, pinnedAt: Date) {
        self.registry = registry
        self.repository = repository
        self.reference = reference
        self.digest = digest
        self.pinnedAt = pinnedAt
    }
}

extension CacheIndex {
    /// SQL for a CTE `closure(d)`: every digest a pin protects — pinned digests, the current digest of pinned
    /// tags, and recursively the children (`manifestChild`) of each.
    static let pinnedClosureCTE = """
        WITH RECURSIVE closure(d) AS (
            SELECT digest FROM pin WHERE digest IS NOT NULL
            UNION SELECT t.digest FROM pin p JOIN tag t
                ON t.registry = p.registry AND t.repository = p.repository AND t.tag = p.reference
            UNION SELECT mc.childDigest FROM manifestChild mc JOIN closure c ON mc.parentDigest = c.d
        )
        """

    /// Records (or replaces) a pin.
    /// - Throws: GRDB's `DatabaseError`.
    public func pin(_ record: PinRecord) throws {
        try pool.write { db in try record.upsert(db) }
    }

    /// Removes the pin of `registry`/`repository` at `reference` (a tag or a digest string).
    /// - Returns: true when a pin was removed, false when there was none.
    /// - Throws: GRDB's `DatabaseError`.
    public func unpin(registry: String, repository: String, reference: String) throws -> Bool {
        try pool.write { db in
            try PinRecord.deleteOne(db, key: ["registry": registry, "repository": repository, "reference": reference])
        }
    }

    /// Every pin, ordered by registry, repository, reference.
    /// - Throws: GRDB's `DatabaseError`.
    public func pins() throws -> [PinRecord] {
        try pool.read { db in
            try PinRecord.fetchAll(db, sql: "SELECT * FROM pin ORDER BY registry, repository, reference")
        }
    }

    /// Every digest a pin protects (the pinned closure), whether or not it is cached.
    /// - Throws: GRDB's `DatabaseError`.
    public func pinnedDigests() throws -> Set<String> {
        try pool.read { db in try Self.pinnedDigests(db) }
    }

    static func pinnedDigests(_ db: Database) throws -> Set<String> {
        Set(try String.fetchAll(db, sql: pinnedClosureCTE + " SELECT d FROM closure"))
    }

    /// The cached objects reachable from `digest` (itself plus its children, recursively).
    /// - Returns: how many have a blob row and their total size in bytes.
    /// - Throws: GRDB's `DatabaseError`.
    public func cachedClosure(of digest: String) throws -> (count: Int, bytes: Int64) {
        try pool.read { db in
            let row = try Row.fetchOne(db, sql: """
                WITH RECURSIVE c(d) AS (
                    SELECT ? UNION SELECT mc.childDigest FROM manifestChild mc JOIN c ON mc.parentDigest = c.d
                )
                SELECT COUNT(*) AS n, COALESCE(SUM(b.size), 0) AS bytes FROM c JOIN blob b ON b.digest = c.d
                """, arguments: [digest])
            return (row?["n"] ?? 0, row?["bytes"] ?? 0)
        }
    }
}
