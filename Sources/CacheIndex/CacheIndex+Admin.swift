import Foundation
import GRDB

/// Whole-index reads for the maintenance commands (`cove verify`, `stats`, `ls`) and start-up reconciliation.
/// They read one consistent snapshot each (a WAL read transaction), so a server writing meanwhile is neither
/// blocked nor seen half way.
extension CacheIndex {
    /// Counts and total size of what the index records.
    public struct Totals: Sendable, Equatable {
        /// Blob rows (manifests and referrers lists included: every file under `blobs/` has one).
        public var blobs: Int
        /// Sum of the blob rows' sizes in bytes.
        public var bytes: Int64
        /// Manifest rows.
        public var manifests: Int
        /// Tag rows.
        public var tags: Int
    }

    /// Counts and sizes, in one read.
    /// - Throws: a GRDB `DatabaseError`.
    public func totals() throws -> Totals {
        try pool.read { db in
            let row = try Row.fetchOne(db, sql: "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blob")
            return Totals(blobs: row?[0] ?? 0, bytes: row?[1] ?? 0,
                          manifests: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM manifest") ?? 0,
                          tags: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM tag") ?? 0)
        }
    }

    /// Every blob row's digest (about 8 MiB of memory per 100,000 rows).
    /// - Throws: a GRDB `DatabaseError`.
    public func blobDigests() throws -> Set<String> {
        try pool.read { db in Set(try String.fetchAll(db, sql: "SELECT digest FROM blob")) }
    }

    /// Every blob row.
    /// - Throws: a GRDB `DatabaseError`.
    public func allBlobs() throws -> [BlobRecord] {
        try pool.read { db in try BlobRecord.fetchAll(db) }
    }

    /// Everything `cove ls` needs, read in one transaction: manifests, tags, manifest children and blob rows.
    /// - Throws: a GRDB `DatabaseError`.
    public func catalog() throws -> (manifests: [ManifestRecord], tags: [TagRecord], children: [ManifestChildRecord], blobs: [BlobRecord]) {
        try pool.read { db in
            (try ManifestRecord.fetchAll(db), try TagRecord.fetchAll(db), try ManifestChildRecord.fetchAll(db), try BlobRecord.fetchAll(db))
        }
    }

    /// Media type of every manifest row, by digest (verification hashes manifests by their own rule).
    /// - Throws: a GRDB `DatabaseError`.
    public func manifestMediaTypes() throws -> [String: String] {
        try pool.read { db in
            var out: [String: String] = [:]
            let rows = try Row.fetchCursor(db, sql: "SELECT digest, mediaType FROM manifest")
            while let row = try rows.next() { out[row[0]] = row[1] }
            return out
        }
    }

    /// Removes the rows for `digest` only if `stillMissing()` (called inside the write transaction, so no
    /// other index writer runs between the check and the delete) says its file is still absent.
    /// - Returns: true when a row was removed.
    /// - Throws: a GRDB `DatabaseError`.
    @discardableResult
    public func forgetBlob(_ digest: String, if stillMissing: () -> Bool) throws -> Bool {
        let removed = try pool.write { db in
            guard try BlobRecord.exists(db, key: digest), stillMissing() else { return false }
            return try BlobRecord.deleteOne(db, key: digest)
        }
        if removed { memory.forget([digest]) }
        return removed
    }
}
