import OCI

/// The repository a request is about: which upstream registry (nil: decided by `?ns=` or the default) and the
/// repository name there.
public struct RepositoryTarget: Equatable, Sendable {
    /// Registry host from a `/v2/<registry-host>/<name>/...` path prefix, lowercased.
    public var registry: String?
    public var name: RepositoryName

    public init(registry: String? = nil, name: RepositoryName) {
        self.registry = registry
        self.name = name
    }
}

/// A request path of the registry API, parsed and validated once (OCI distribution spec, "Endpoints").
public enum RegistryRoute: Equatable, Sendable {
    /// `/v2/` (end-1): the API version check.
    case base
    /// `/v2/<name>/manifests/<reference>` (end-3, end-7, end-9).
    case manifest(RepositoryTarget, Reference)
    /// `/v2/<name>/blobs/<digest>` (end-2, end-10).
    case blob(RepositoryTarget, Digest)
    /// `/v2/<name>/blobs/uploads/...` (end-4 to end-6, end-11): pushing, which a mirror does not do.
    case upload
    /// `/v2/<name>/tags/list` (end-8).
    case tags(RepositoryTarget)
    /// `/v2/_catalog`.
    case catalog
    /// `/v2/<name>/referrers/<digest>` (end-12a, OCI distribution spec 1.1 "Listing Referrers").
    case referrers(RepositoryTarget, Digest)

    /// Parses a raw (still percent-encoded) request path.
    ///
    /// The repository name is everything between `/v2/` and the last `/manifests/`, `/blobs/`, `/tags/list`
    /// or `/referrers/`, as distribution's router does. When its first component satisfies `isRegistry` (a
    /// registry host such as `ghcr.io` or `127.0.0.1:5000`), that component is the registry and the rest the
    /// name. The name is then validated, so `..` or `%2e%2e` never gets further.
    /// - Returns: nil when the path is not a registry API path at all.
    /// - Throws: `NAME_INVALID`, `TAG_INVALID` or `DIGEST_INVALID`.
    public init?(path: String, isRegistry: (Substring) -> Bool = { _ in false }) throws(DistributionError) {
        guard path == "/v2" || path.hasPrefix("/v2/") else { return nil }
        let rest = path.dropFirst(4)
        if rest.isEmpty { self = .base; return }
        if rest == "_catalog" { self = .catalog; return }
        func target(_ raw: Substring) throws(DistributionError) -> RepositoryTarget {
            if let slash = raw.firstIndex(of: "/"), isRegistry(raw[..<slash]) {
                return RepositoryTarget(registry: raw[..<slash].lowercased(), name: try RepositoryName(String(raw[raw.index(after: slash)...])))
            }
            return RepositoryTarget(name: try RepositoryName(String(raw)))
        }
        if rest.hasSuffix("/tags/list") {
            self = .tags(try target(rest.dropLast(10)))
            return
        }
        if let r = Self.lastRange(of: "/blobs/uploads", in: rest),
           r.upperBound == rest.endIndex || rest[r.upperBound] == "/" {
            self = .upload
            return
        }
        if let r = Self.lastRange(of: "/referrers/", in: rest) {
            self = .referrers(try target(rest[..<r.lowerBound]), try Digest(String(rest[r.upperBound...])))
            return
        }
        for (marker, isManifest) in Self.contentMarkers {
            guard let r = Self.lastRange(of: marker, in: rest) else { continue }
            let t = try target(rest[..<r.lowerBound])
            let tail = String(rest[r.upperBound...])
            self = isManifest ? .manifest(t, try Reference(tail)) : .blob(t, try Digest(tail))
            return
        }
        return nil
    }

    private static let contentMarkers: [(StaticString, Bool)] = [("/manifests/", true), ("/blobs/", false)]

    /// The last occurrence of the ASCII `marker` in `text`, compared byte by byte (what Foundation's
    /// `range(of:options: .backwards)` finds for ASCII, without its per-call cost on every request).
    static func lastRange(of marker: StaticString, in text: Substring) -> Range<Substring.Index>? {
        let m = UnsafeRawBufferPointer(start: marker.utf8Start, count: marker.utf8CodeUnitCount)
        var copy = text
        // Native strings are contiguous UTF-8 (`withUTF8` makes any other one so first); UTF-8 offsets are the
        // same in the copy and in `text`.
        let offset: Int? = copy.withUTF8 { bytes in
            guard m.count > 0, bytes.count >= m.count else { return nil }
            var start = bytes.count - m.count
            search: while start >= 0 {
                defer { start -= 1 }
                for j in 0..<m.count where bytes[start + j] != m[j] { continue search }
                return start
            }
            return nil
        }
        guard let offset else { return nil }
        let lower = text.utf8.index(text.utf8.startIndex, offsetBy: offset)
        return lower..<text.utf8.index(lower, offsetBy: m.count)
    }
}
