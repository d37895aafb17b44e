import GRDB

/// Named schema migrations. Frozen: once released, a migration is never edited; changes get a new one.
enum Migrations {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-blobs-manifests-tags") { db in
            try db.create(table: "blob") { t in
                t.primaryKey("digest", .text)
                t.column("size", .integer).notNull()
                t.column("mediaType", .text).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("lastAccessAt", .datetime).notNull().indexed()
            }
            try db.create(table: "manifest") { t in
                t.primaryKey("digest", .text).references("blob", onDelete: .cascade)
                t.column("mediaType", .text).notNull()
                t.column("registry", .text).notNull()
                t.column("repository", .text).notNull()
            }
            try db.create(table: "manifestChild") { t in
                t.column("parentDigest", .text).notNull().references("manifest", onDelete: .cascade)
                t.column("childDigest", .text).notNull().indexed()
                t.column("kind", .text).notNull()
                t.column("size", .integer).notNull()
                t.column("platform", .text)
                t.primaryKey(["parentDigest", "childDigest", "kind"])
            }
            try db.create(table: "tag") { t in
                t.column("registry", .text).notNull()
                t.column("repository", .text).notNull()
                t.column("tag", .text).notNull()
                t.column("digest", .text).notNull().indexed()
                t.column("fetchedAt", .datetime).notNull()
                t.column("checkedAt", .datetime).notNull()
                t.primaryKey(["registry", "repository", "tag"])
            }
        }
        m.registerMigration("v2-referrers") { db in
            try db.create(table: "referrers") { t in
                t.column("registry", .text).notNull()
                t.column("repository", .text).notNull()
                t.column("subject", .text).notNull()
                t.column("query", .text).notNull()
                t.column("digest", .text).notNull().indexed()
                t.column("nextQuery", .text)
                t.column("filtersApplied", .boolean).notNull()
                t.column("fetchedAt", .datetime).notNull()
                t.column("checkedAt", .datetime).notNull()
                t.primaryKey(["registry", "repository", "subject", "query"])
            }
        }
        // Pins (what eviction never removes) and persisted counters (`cove stats`). Access times stay in
        // `blob.lastAccessAt`, now written in batches by the mirror.
        m.registerMigration("v3-pins-access-counters") { db in
            try db.create(table: "pin") { t in
                t.column("registry", .text).notNull()
                t.column("repository", .text).notNull()
                t.column("reference", .text).notNull()
                t.column("digest", .text).indexed()
                t.column("pinnedAt", .datetime).notNull()
                t.primaryKey(["registry", "repository", "reference"])
            }
            // LRU order with keyset pagination: eviction walks this index instead of sorting the table per batch.
            try db.create(index: "blob_on_lastAccessAt_digest", on: "blob", columns: ["lastAccessAt", "digest"])
            try db.create(table: "counter") { t in
                t.primaryKey("name", .text)
                t.column("value", .integer).notNull().defaults(to: 0)
            }
        }
        return m
    }
}
