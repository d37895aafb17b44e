/// A tag such as `latest` or `1.36.1-musl`.
///
/// Grammar (OCI distribution spec, "Pulling manifests"): `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
public struct Tag: Hashable, Sendable, CustomStringConvertible {
    /// The validated tag.
    public let value: String

    /// The longest accepted tag, in characters.
    public static let maxLength = 128

    /// Validates `string` against the spec grammar.
    /// - Throws: `DistributionError` with code `TAG_INVALID`.
    public init(_ string: String) throws(DistributionError) {
        let bytes = Array(string.utf8)
        guard let first = bytes.first, bytes.count <= Self.maxLength else {
            throw .tagInvalid("tag must be 1 to \(Self.maxLength) characters")
        }
        func word(_ c: UInt8) -> Bool {
            (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || (c >= 0x30 && c <= 0x39) || c == UInt8(ascii: "_")
        }
        guard word(first), bytes.dropFirst().allSatisfy({ word($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }) else {
            throw .tagInvalid("invalid tag \(RepositoryName.quoted(string)): must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
        }
        value = string
    }

    public var description: String { value }
}
