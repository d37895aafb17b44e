import Foundation
import GRDB

/// A cached blob or manifest file: one row per digest held under `blobs/`.
public struct BlobRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "blob"
    /// `algorithm:hex`.
    public var digest: String
    /// Size in bytes.
    public var size: Int64
    /// The `Content-Type` the upstream served it with (blobs) or the manifest media type.
    public var mediaType: String
    /// When the verified file was committed.
    public var createdAt: Date
    /// Last time a client was served this content (written in batches by the mirror's access recorder).
    public var lastAccessAt: Date

    public init(digest: String, size: Int64, mediaType: String, createdAt: Date, lastAccessAt: Date) {
        self.digest = digest
        self.size = size
        self.mediaType = mediaType
        self.createdAt = createdAt
        self.lastAccessAt = lastAccessAt
    }
}

/// A cached manifest; its bytes are the `BlobRecord` with the same digest.
public struct ManifestRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "manifest"
    public var digest: String
    /// The media type the manifest is served with (byte-exact, never converted).
    public var mediaType: String
    /// The registry and repository it was first fetched from, e.g. `registry-1.docker.io`, `library/busybox`.
    public var registry: String
    public var repository: String

    public init(digest: String, mediaType: String, registry: String, repository: String) {
        self.digest = digest
        self.mediaType = mediaType
        self.registry = registry
        self.repository = repository
    }
}

/// One descriptor a manifest references: a child manifest (of an index) or a config/layer blob.
public struct ManifestChildRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "manifestChild"
    public var parentDigest: String
    public var childDigest: String
    /// `manifest` or `blob`.
    public var kind: String
    /// Size in bytes from the descriptor.
    public var size: Int64
    public var platform: String?

    public init(parentDigest: String, childDigest: String, kind: String, size: Int64, platform: String?) {
        self.parentDigest = parentDigest
        self.childDigest = childDigest
        self.kind = kind
        self.size = size
        self.platform = platform
    }
}

/// A tag → manifest digest mapping learned from an upstream.
public struct TagRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "tag"
    /// Upstream registry identity (host[:port]).
    public var registry: String
    /// Repository name as sent upstream (e.g. `library/busybox` on Docker Hub).
    public var repository: String
    public var tag: String
    public var digest: String
    /// When the digest was last fetched (changed).
    public var fetchedAt: Date
    /// When the upstream last confirmed the digest (HEAD); the freshness TTL counts from here.
    public var checkedAt: Date

    public init(registry: String, repository: String, tag: String, digest: String, fetchedAt: Date, checkedAt: Date) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
        self.fetchedAt = fetchedAt
        self.checkedAt = checkedAt
    }
}

/// A referrers list (OCI distribution spec 1.1, "Listing Referrers") learned from an upstream, cached like a
/// tag: its body is a blob (an image index), the row says for which request and when it was confirmed.
public struct ReferrersRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "referrers"
    /// Upstream registry identity (as in `TagRecord`).
    public var registry: String
    /// Repository name as sent upstream.
    public var repository: String
    /// Digest of the subject manifest.
    public var subject: String
    /// The request's query without `ns` (`artifactType=…`, pagination), "" for none.
    public var query: String
    /// Digest of the served body (a blob row and file).
    public var digest: String
    /// Query of the upstream's next page, if it paginated.
    public var nextQuery: String?
    /// True when the body is filtered by `artifactType` (by the upstream or by Cove).
    public var filtersApplied: Bool
    public var fetchedAt: Date
    /// When the upstream last answered for it; the freshness TTL (`tag_ttl`) counts from here.
    public var checkedAt: Date

    public init(registry: String, repository: String, subject: String, query: String, digest: String, nextQuery: String?,
                filtersApplied: Bool, fetchedAt: Date, checkedAt: Date) {
        self.registry = registry
        self.repository = repository
        self.subject = subject
        self.query = query
        self.digest = digest
        self.nextQuery = nextQuery
        self.filtersApplied = filtersApplied
        self.fetchedAt = fetchedAt
        self.checkedAt = checkedAt
    }
}
