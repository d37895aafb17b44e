import Foundation
import GRDB

/// The SQLite index of what the cache holds (GRDB `DatabasePool`, WAL mode): blobs, manifests and tags.
///
/// Queries are written as SQL rather than GRDB's key-based helpers: those introspect the schema and stop the
/// process (`fatalError`) when a table is missing or altered, and a damaged index must be an error, not a crash.
///
/// The index never claims content the disk lacks for long: callers that find a row but no file call
/// `forgetBlob` and treat it as a miss.
public final class CacheIndex: Sendable {
    let pool: DatabasePool
    /// Verified manifests and tag rows in memory (`ManifestMemory`), kept true by this index's writes.
    public let memory: ManifestMemory

    /// Opens or creates the index at `path` and runs pending migrations.
    /// - Parameter memoryCapacity: bytes of manifests and tag rows held in memory (0: none, every read
    ///   goes to SQLite). Only `Mirror.manifest` fills it; a serving process sets it, maintenance commands need not.
    /// - Throws: GRDB's `DatabaseError` when the file cannot be opened or migrated.
    public init(path: String, memoryCapacity: Int = 0) throws {
        memory = ManifestMemory(capacity: memoryCapacity)
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        pool = try DatabasePool(path: path, configuration: config)
        try Migrations.migrator.migrate(pool)
    }

    /// The blob row for `digest`, if any.
    public func blob(_ digest: String) throws -> BlobRecord? {
        try pool.read { db in try BlobRecord.fetchOne(db, sql: "SELECT * FROM blob WHERE digest = ?", arguments: [digest]) }
    }

    /// The manifest row and its blob row for `digest`, if both exist.
    public func manifest(_ digest: String) throws -> (ManifestRecord, BlobRecord)? {
        try pool.read { db in
            guard let m = try ManifestRecord.fetchOne(db, sql: "SELECT * FROM manifest WHERE digest = ?", arguments: [digest]),
                  let b = try BlobRecord.fetchOne(db, sql: "SELECT * FROM blob WHERE digest = ?", arguments: [digest]) else { return nil }
            return (m, b)
        }
    }

    /// Records a committed blob (idempotent: an existing row is kept).
    public func insertBlob(digest: String, size: Int64, mediaType: String, now: Date = Date()) throws {
        try pool.write { db in
            try BlobRecord(digest: digest, size: size, mediaType: mediaType, createdAt: now, lastAccessAt: now)
                .insert(db, onConflict: .ignore)
        }
    }

    /// Records a committed manifest, its bytes' blob row and its children in one transaction.
    public func insertManifest(_ manifest: ManifestRecord, size: Int64, children: [ManifestChildRecord], now: Date = Date()) throws {
        try pool.write { db in
            try BlobRecord(digest: manifest.digest, size: size, mediaType: manifest.mediaType, createdAt: now, lastAccessAt: now)
                .insert(db, onConflict: .ignore)
            try manifest.insert(db, onConflict: .ignore)
            for child in children { try child.insert(db, onConflict: .ignore) }
        }
    }

    /// The tag row for `registry`/`repository`:`tag`, if any: from memory when held, else from SQLite (and
    /// then remembered).
    public func tag(registry: String, repository: String, tag: String) throws -> TagRecord? {
        if let held = memory.tag(.init(registry: registry, repository: repository, tag: tag)) { return held }
        let epoch = memory.epoch
        let record = try pool.read { db in
            try TagRecord.fetchOne(db, sql: "SELECT * FROM tag WHERE registry = ? AND repository = ? AND tag = ?",
                                   arguments: [registry, repository, tag])
        }
        if let record { memory.remember(record, since: epoch) }
        return record
    }

    /// Inserts or replaces a tag mapping.
    /// A tag pinned before its first pull gets the digest it first resolves to in the same transaction, so that
    /// image stays pinned when the tag later moves (a tag pin protects what it named first and what it names now).
    public func upsertTag(_ record: TagRecord) throws {
        try pool.write { db in
            try db.execute(sql: """
                INSERT INTO tag (registry, repository, tag, digest, fetchedAt, checkedAt) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (registry, repository, tag) DO UPDATE SET digest = excluded.digest, fetchedAt = excluded.fetchedAt,
                checkedAt = excluded.checkedAt
                """, arguments: [record.registry, record.repository, record.tag, record.digest, record.fetchedAt, record.checkedAt])
            try db.execute(sql: "UPDATE pin SET digest = ? WHERE registry = ? AND repository = ? AND reference = ? AND digest IS NULL",
                           arguments: [record.digest, record.registry, record.repository, record.tag])
        }
        memory.store(record)
    }

    /// The tags of `registry`/`repository` whose manifest is cached (what an offline mirror can serve).
    public func servableTags(registry: String, repository: String) throws -> [String] {
        try pool.read { db in
            try String.fetchAll(db, sql: """
                SELECT tag.tag FROM tag JOIN manifest ON manifest.digest = tag.digest
                WHERE tag.registry = ? AND tag.repository = ? ORDER BY tag.tag
                """, arguments: [registry, repository])
        }
    }

    /// Marks a tag as confirmed by the upstream at `now` without changing its digest.
    public func markTagChecked(registry: String, repository: String, tag: String, now: Date = Date()) throws {
        try pool.write { db in
            try db.execute(
                sql: "UPDATE tag SET checkedAt = ? WHERE registry = ? AND repository = ? AND tag = ?",
                arguments: [now, registry, repository, tag])
        }
        memory.markChecked(.init(registry: registry, repository: repository, tag: tag), at: now)
    }

    /// The cached referrers list for a request, if any.
    public func referrers(registry: String, repository: String, subject: String, query: String) throws -> ReferrersRecord? {
        try pool.read { db in
            try ReferrersRecord.fetchOne(db, sql: "SELECT * FROM referrers WHERE registry = ? AND repository = ? AND subject = ? AND query = ?",
                                         arguments: [registry, repository, subject, query])
        }
    }

    /// Records a referrers list whose body is stored as the blob `record.digest` (`size` bytes), in one transaction.
    public func upsertReferrers(_ record: ReferrersRecord, size: Int64, now: Date = Date()) throws {
        try pool.write { db in
            try BlobRecord(digest: record.digest, size: size, mediaType: "application/vnd.oci.image.index.v1+json", createdAt: now, lastAccessAt: now)
                .insert(db, onConflict: .ignore)
            try db.execute(sql: """
                INSERT INTO referrers (registry, repository, subject, query, digest, nextQuery, filtersApplied, fetchedAt, checkedAt)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (registry, repository, subject, query) DO UPDATE SET digest = excluded.digest,
                nextQuery = excluded.nextQuery, filtersApplied = excluded.filtersApplied, fetchedAt = excluded.fetchedAt,
                checkedAt = excluded.checkedAt
                """, arguments: [record.registry, record.repository, record.subject, record.query, record.digest, record.nextQuery,
                                 record.filtersApplied, record.fetchedAt, record.checkedAt])
        }
    }

    /// Removes the rows for `digest` (its file is gone or corrupt).
    public func forgetBlob(_ digest: String) throws {
        defer { memory.forget([digest]) }
        try pool.write { db in try db.execute(sql: "DELETE FROM blob WHERE digest = ?", arguments: [digest]) }
    }
}
