/// A repository name such as `library/busybox` or `team/app/api`.
///
/// Grammar (OCI distribution spec, "Pulling manifests"): one or more path components separated by `/`, each
/// matching `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`. The whole name is at most 255 characters (distribution's
/// limit). Because `/`, `.`, `%` and uppercase letters outside this grammar are refused, a valid name can
/// never contain `..`, an empty component or a percent escape, so it is safe in a file path or an upstream URL.
public struct RepositoryName: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The validated name, e.g. `library/busybox`.
    public let value: String

    /// The longest accepted name, in characters (distribution/distribution `reference.NameTotalLengthMax`).
    public static let maxLength = 255

    /// Validates `string` against the spec grammar.
    /// - Throws: `DistributionError` with code `NAME_INVALID` naming the rule that failed.
    public init(_ string: String) throws(DistributionError) {
        guard !string.isEmpty else { throw .nameInvalid("repository name is empty") }
        guard string.utf8.count <= Self.maxLength else {
            throw .nameInvalid("repository name is longer than \(Self.maxLength) characters")
        }
        for component in string.split(separator: "/", omittingEmptySubsequences: false) {
            guard Self.isValidComponent(component.utf8) else {
                throw .nameInvalid("invalid repository name \(Self.quoted(string)): component \(Self.quoted(String(component))) must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*")
            }
        }
        value = string
    }

    /// The path components, e.g. `["library", "busybox"]`.
    public var components: [Substring] { value.split(separator: "/") }

    /// This name with `prefix/` in front, re-validated (e.g. Docker Hub's `library/` for official images).
    /// - Throws: `NAME_INVALID` when the result is too long.
    public func prefixed(with prefix: String) throws(DistributionError) -> RepositoryName {
        try RepositoryName(prefix + "/" + value)
    }

    public var description: String { value }

    public static func < (lhs: RepositoryName, rhs: RepositoryName) -> Bool { lhs.value < rhs.value }

    static func isAlnum(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` without a regex engine: runs of alphanumerics joined by exactly one
    /// `.`, one or two `_`, or any number of `-`.
    static func isValidComponent(_ bytes: Substring.UTF8View) -> Bool {
        var i = bytes.startIndex
        guard i != bytes.endIndex, isAlnum(bytes[i]) else { return false }
        while i != bytes.endIndex {
            // alphanumeric run
            while i != bytes.endIndex, isAlnum(bytes[i]) { i = bytes.index(after: i) }
            if i == bytes.endIndex { return true }
            // separator
            let sep = bytes[i]
            var count = 0
            while i != bytes.endIndex, bytes[i] == sep { count += 1; i = bytes.index(after: i) }
            switch sep {
            case UInt8(ascii: "."): guard count == 1 else { return false }
            case UInt8(ascii: "_"): guard count <= 2 else { return false }
            case UInt8(ascii: "-"): break
            default: return false
            }
            guard i != bytes.endIndex, isAlnum(bytes[i]) else { return false }
        }
        return true
    }

    /// `s` in double quotes, cut to 80 characters: safe to put user input into an error message.
    public static func quoted(_ s: String) -> String {
        let cut = s.count > 80 ? String(s.prefix(80)) + "…" : s
        return "\"" + cut + "\""
    }
}
