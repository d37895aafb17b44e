/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.
///
/// OCI distribution spec, "Pulling manifests": a reference is a digest when it contains `:` (tags cannot),
/// otherwise a tag.
public enum Reference: Hashable, Sendable, CustomStringConvertible {
    case tag(Tag)
    case digest(Digest)

    /// Parses `string` as a digest when it contains `:`, otherwise as a tag.
    /// - Throws: `DIGEST_INVALID` or `TAG_INVALID`.
    public init(_ string: String) throws(DistributionError) {
        if string.utf8.contains(UInt8(ascii: ":")) { self = .digest(try Digest(string)) } else { self = .tag(try Tag(string)) }
    }

    public var description: String {
        switch self {
        case .tag(let t): t.value
        case .digest(let d): d.description
        }
    }
}
