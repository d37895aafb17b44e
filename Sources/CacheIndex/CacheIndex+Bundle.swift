import Foundation
import GRDB

/// Everything `cove import` registers, written in one transaction so a bundle becomes visible whole or not at all.
public struct ImportRecords: Sendable {
    /// Rows for every blob and manifest file (existing rows are kept).
    public var blobs: [BlobRecord]
    /// Manifest rows with their children (existing rows are kept).
    public var manifests: [(ManifestRecord, [ManifestChildRecord])]
    /// Tag mappings (replacing what a tag pointed to).
    public var tags: [TagRecord]
    /// Pins (replacing existing pins of the same reference).
    public var pins: [PinRecord]

    public init(blobs: [BlobRecord], manifests: [(ManifestRecord, [ManifestChildRecord])], tags: [TagRecord], pins: [PinRecord]) {
        self.blobs = blobs
        self.manifests = manifests
        self.tags = tags
        self.pins = pins
    }
}

extension CacheIndex {
    /// Writes `records` in one transaction. The files must already be in place (rows last).
    /// - Throws: GRDB's `DatabaseError`; then nothing was written.
    public func register(_ records: ImportRecords) throws {
        try pool.write { db in
            for b in records.blobs { try b.insert(db, onConflict: .ignore) }
            for (m, children) in records.manifests {
                try m.insert(db, onConflict: .ignore)
                for c in children { try c.insert(db, onConflict: .ignore) }
            }
            for t in records.tags {
                try db.execute(sql: """
                    INSERT INTO tag (registry, repository, tag, digest, fetchedAt, checkedAt) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest, fetchedAt = excluded.fetchedAt,
                    checkedAt = excluded.checkedAt
                    """, arguments: [t.registry, t.repository, t.tag, t.digest, t.fetchedAt, t.checkedAt])
            }
            for p in records.pins { try p.upsert(db) }
        }
        if !records.tags.isEmpty { memory.forgetTags() }
    }
}
