import GRDB

extension CacheIndex {
    /// A trivial read that touches the schema (`/readyz`): the database opens a read transaction and answers.
    /// - Throws: a GRDB `DatabaseError` when it cannot.
    public func ping() throws {
        _ = try pool.read { db in try Int.fetchOne(db, sql: "SELECT 1 FROM blob LIMIT 1") }
    }
}
