import CacheIndex
import Foundation

/// `cove ls [REPOSITORY]`.
public struct ListCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        /// `repository`, `registry/repository`, or for Docker Hub an official image's short name (`busybox`);
        /// nil lists every repository.
        public var repository: String?
        public init(repository: String?) { self.repository = repository }
    }

    public typealias Response = Listing
    public static let name = "ls"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> Listing {
        try cache.list(repository: request.repository)
    }
}

/// What the cache holds, by repository (`repositories`) or, for one repository, by tag and image (`images`).
public struct Listing: AdminResponse, Equatable {
    /// One repository: the tags and manifests recorded under it.
    public struct Repository: Codable, Sendable, Equatable {
        public var registry: String
        public var repository: String
        public var tags: Int
        /// Top-level manifests (tagged or fetched by digest; an index's platform manifests count with it).
        public var images: Int
        /// Bytes of everything cached that its images reference (each blob once).
        public var bytes: Int64
        /// Latest access to any of its manifests.
        public var lastAccess: Date?
        /// nil while Cove has no pins.
        public var pinned: Bool?
    }

    /// One tag, or one manifest fetched by digest without a tag.
    public struct Image: Codable, Sendable, Equatable {
        public var registry: String
        public var repository: String
        /// nil for a manifest cached without a tag.
        public var tag: String?
        public var digest: String
        /// The manifest's media type; nil when the tag's manifest is not cached.
        public var mediaType: String?
        /// Bytes cached for it: the manifest, its child manifests and the blobs they reference that are cached.
        public var bytes: Int64
        public var lastAccess: Date?
        /// nil while Cove has no pins.
        public var pinned: Bool?
    }

    /// The argument, if one was given.
    public var query: String?
    /// Set without an argument.
    public var repositories: [Repository]
    /// Set with an argument.
    public var images: [Image]

    /// 1 when a repository was asked for and nothing is cached under it.
    public var exitStatus: Int32 { query != nil && images.isEmpty ? 1 : 0 }

    public var text: String {
        func pin(_ p: Bool?) -> String { p.map { $0 ? "yes" : "no" } ?? "-" }
        func date(_ d: Date?) -> String { d?.isoText ?? "-" }
        if let query {
            if images.isEmpty { return "no cached repository matches \(query)" }
            return TextTable.render([["REPOSITORY", "TAG", "DIGEST", "SIZE", "LAST ACCESS", "PINNED"]] + images.map {
                ["\($0.registry)/\($0.repository)", $0.tag ?? "<none>", $0.digest, ByteFormat.human($0.bytes), date($0.lastAccess), pin($0.pinned)]
            })
        }
        return TextTable.render([["REPOSITORY", "TAGS", "IMAGES", "SIZE", "LAST ACCESS", "PINNED"]] + repositories.map {
            ["\($0.registry)/\($0.repository)", "\($0.tags)", "\($0.images)", ByteFormat.human($0.bytes), date($0.lastAccess), pin($0.pinned)]
        })
    }
}

extension CacheAdmin {
    /// Builds the listing from one consistent read of the index.
    /// - Throws: a database error.
    public func list(repository query: String?) throws -> Listing {
        let catalog = try index.catalog()
        let blobs = Dictionary(catalog.blobs.map { ($0.digest, $0) }, uniquingKeysWith: { a, _ in a })
        let manifests = Dictionary(catalog.manifests.map { ($0.digest, $0) }, uniquingKeysWith: { a, _ in a })
        let children = Dictionary(grouping: catalog.children, by: \.parentDigest)
        let childManifests = Set(catalog.children.filter { $0.kind == "manifest" }.map(\.childDigest))

        /// The cached digests an image consists of: itself, its child manifests, and their blobs.
        func closure(_ digest: String, depth: Int = 0) -> Set<String> {
            var out: Set<String> = blobs[digest] != nil ? [digest] : []
            guard depth < 3 else { return out }
            for c in children[digest] ?? [] {
                if c.kind == "manifest" { out.formUnion(closure(c.childDigest, depth: depth + 1)) } else if blobs[c.childDigest] != nil { out.insert(c.childDigest) }
            }
            return out
        }
        func bytes(_ digests: Set<String>) -> Int64 { digests.reduce(0) { $0 + (blobs[$1]?.size ?? 0) } }

        // Digests a pin protects (pinned images, what pinned tags resolve to, and their children).
        let pinned = try index.pinnedDigests()
        struct Key: Hashable { var registry: String; var repository: String }
        var tagged: [Key: [TagRecord]] = [:]
        for t in catalog.tags { tagged[Key(registry: t.registry, repository: t.repository), default: []].append(t) }
        var untagged: [Key: [ManifestRecord]] = [:]
        let taggedDigests = Set(catalog.tags.map { "\($0.registry)/\($0.repository)@\($0.digest)" })
        for m in catalog.manifests where !childManifests.contains(m.digest) && !taggedDigests.contains("\(m.registry)/\(m.repository)@\(m.digest)") {
            untagged[Key(registry: m.registry, repository: m.repository), default: []].append(m)
        }

        func images(_ key: Key) -> [Listing.Image] {
            let fromTags = (tagged[key] ?? []).sorted { $0.tag < $1.tag }.map { t in
                Listing.Image(registry: key.registry, repository: key.repository, tag: t.tag, digest: t.digest,
                              mediaType: manifests[t.digest]?.mediaType, bytes: bytes(closure(t.digest)),
                              lastAccess: blobs[t.digest]?.lastAccessAt,
                              pinned: pinned.contains(t.digest))
            }
            let fromDigests = (untagged[key] ?? []).sorted { $0.digest < $1.digest }.map { m in
                Listing.Image(registry: key.registry, repository: key.repository, tag: nil, digest: m.digest, mediaType: m.mediaType,
                              bytes: bytes(closure(m.digest)), lastAccess: blobs[m.digest]?.lastAccessAt,
                              pinned: pinned.contains(m.digest))
            }
            return fromTags + fromDigests
        }

        let keys = Set(tagged.keys).union(untagged.keys).sorted { ($0.registry, $0.repository) < ($1.registry, $1.repository) }
        if let query {
            let matching = keys.filter { k in
                query == k.repository || query == "\(k.registry)/\(k.repository)" || (!query.contains("/") && k.repository == "library/" + query)
            }
            return Listing(query: query, repositories: [], images: matching.flatMap(images))
        }
        let repositories = keys.map { key -> Listing.Repository in
            let imgs = images(key)
            let all = imgs.reduce(into: Set<String>()) { $0.formUnion(closure($1.digest)) }
            let pins = imgs.map(\.pinned)
            return Listing.Repository(registry: key.registry, repository: key.repository, tags: tagged[key]?.count ?? 0, images: imgs.count,
                                      bytes: bytes(all), lastAccess: imgs.compactMap(\.lastAccess).max(),
                                      pinned: pins.contains { $0 == nil } ? nil : pins.contains { $0 == true })
        }
        return Listing(query: nil, repositories: repositories, images: [])
    }
}
