import OCI
import Upstream

/// An image as operators type it — `registry/name:tag`, `registry/name@digest`, or a short Docker Hub name
/// (`busybox:1.36`) — resolved the way `cove serve` routes requests: the first component names a registry when
/// `UpstreamRouter.isRegistryPrefix` says so, else the default registry applies; names are then as sent
/// upstream (`library/busybox` on Docker Hub, `OCI.DockerHub`). Without a tag or digest the tag is `latest`.
/// `name:tag@digest` is by digest (the digest wins); the tag is kept in `tag`.
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    /// Registry identity as the cache keys it (`docker.io`, `ghcr.io`, `host:port`).
    public var registry: String
    /// Repository as sent upstream.
    public var repository: RepositoryName
    public var reference: Reference
    /// The tag written beside a digest (`name:tag@digest`); nil otherwise.
    public var tag: Tag?

    /// An image already resolved: `registry` as the cache keys it, `repository` as sent upstream; `tag` only
    /// beside a digest (`name:tag@digest`).
    public init(registry: String, repository: RepositoryName, reference: Reference, tag: Tag? = nil) {
        self.registry = registry
        self.repository = repository
        self.reference = reference
        self.tag = tag
    }

    public var description: String {
        switch reference {
        case .tag(let t): "\(registry)/\(repository):\(t)"
        case .digest(let d): "\(registry)/\(repository)" + (tag.map { ":\($0)" } ?? "") + "@\(d)"
        }
    }

    /// Parses and routes `text`.
    /// - Throws: `NAME_INVALID`, `TAG_INVALID`, `DIGEST_INVALID` for malformed parts; `DENIED` for a registry
    ///   that is not configured (unless `allow_any_registry`).
    public static func parse(_ text: String, router: UpstreamRouter) throws(DistributionError) -> ImageReference {
        var name = Substring(text)
        var reference = Reference.tag(try Tag("latest"))
        var taggedDigest: Tag?
        if let at = name.firstIndex(of: "@") {
            reference = .digest(try Digest(String(name[name.index(after: at)...])))
            name = name[..<at]
            if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") {
                taggedDigest = try Tag(String(name[name.index(after: colon)...]))
                name = name[..<colon]
            }
        } else if let colon = name.lastIndex(of: ":"), !name[colon...].contains("/") {
            reference = .tag(try Tag(String(name[name.index(after: colon)...])))
            name = name[..<colon]
        }
        let parts = name.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let client: RegistryClient
        let path: String
        if parts.count == 2, router.isRegistryPrefix(parts[0]) {
            client = try router.registry(named: String(parts[0]))
            path = String(parts[1])
        } else {
            client = try router.registry(named: nil)
            path = String(name)
        }
        let repository = client.upstreamName(for: try RepositoryName(path))
        return ImageReference(registry: client.name, repository: repository, reference: reference, tag: taggedDigest)
    }
}
