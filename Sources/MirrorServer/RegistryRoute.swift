import OCI

/// A request path of the registry API, parsed and validated once (OCI distribution spec, "Endpoints").
public enum RegistryRoute: Equatable, Sendable {
    /// `/v2/` (end-1): the API version check.
    case base
    /// `/v2/<name>/manifests/<reference>` (end-3, end-7, end-9).
    case manifest(RepositoryName, Reference)
    /// `/v2/<name>/blobs/<digest>` (end-2, end-10).
    case blob(RepositoryName, Digest)
    /// `/v2/<name>/blobs/uploads/...` (end-4 to end-6, end-11): pushing, which a mirror does not do.
    case upload(RepositoryName)
    /// `/v2/<name>/tags/list` (end-8).
    case tags(RepositoryName)
    /// `/v2/_catalog`.
    case catalog
    /// `/v2/<name>/referrers/<digest>` (end-12).
    case referrers(RepositoryName)

    /// Parses a raw (still percent-encoded) request path.
    ///
    /// The repository name is everything between `/v2/` and the last `/manifests/`, `/blobs/`, `/tags/list`
    /// or `/referrers/`, as distribution's router does; it is then validated, so a name such as `..` or
    /// `%2e%2e` never gets further.
    /// - Returns: nil when the path is not a registry API path at all.
    /// - Throws: `NAME_INVALID`, `TAG_INVALID` or `DIGEST_INVALID`.
    public init?(path: String) throws(DistributionError) {
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        let rest = path.dropFirst(4)
        if rest.isEmpty { self = .base; return }
        if rest == "_catalog" { self = .catalog; return }
        if rest.hasSuffix("/tags/list") {
            self = .tags(try RepositoryName(String(rest.dropLast(10))))
            return
        }
        if let r = rest.range(of: "/blobs/uploads", options: .backwards),
           r.upperBound == rest.endIndex || rest[r.upperBound] == "/" {
            self = .upload(try RepositoryName(String(rest[..<r.lowerBound])))
            return
        }
        for (marker, kind) in [("/manifests/", 0), ("/blobs/", 1), ("/referrers/", 2)] {
            guard let r = rest.range(of: marker, options: .backwards) else { continue }
            let name = try RepositoryName(String(rest[..<r.lowerBound]))
            let tail = String(rest[r.upperBound...])
            switch kind {
            case 0: self = .manifest(name, try Reference(tail))
            case 1: self = .blob(name, try Digest(tail))
            default: self = .referrers(name)
            }
            return
        }
        return nil
    }
}
