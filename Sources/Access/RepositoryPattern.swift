/// A repository name pattern for `repositories.allow` / `repositories.deny`.
///
/// Glob semantics: `*` matches any run of characters, `/` included, so `myorg/*` covers `myorg/app` and
/// `myorg/team/app` (but not `myorg` itself); every other character matches itself, so a pattern without
/// `*` is an exact name. Patterns are lowercase like repository names; they are matched against the name as
/// the upstream knows it (`busybox` on Docker Hub is `library/busybox`).
public struct RepositoryPattern: Sendable, Equatable, CustomStringConvertible {
    public let text: String

    /// - Throws: `RepositoryPatternError` when the pattern is empty or has characters no repository name can
    ///   contain (the OCI name grammar: lowercase letters, digits, `.`, `_`, `-`, `/`; plus `*`).
    public init(_ text: String) throws(RepositoryPatternError) {
        guard !text.isEmpty else { throw RepositoryPatternError(pattern: text, "is empty") }
        guard text.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-/*".unicodeScalars.contains($0) }) else {
            throw RepositoryPatternError(pattern: text, "may hold only lowercase letters, digits, . _ - / and *")
        }
        self.text = text
    }

    public var description: String { text }

    /// True when `name` matches the whole pattern (iterative glob match, linear in practice, no recursion).
    public func matches(_ name: String) -> Bool {
        let p = Array(text.utf8), s = Array(name.utf8)
        var pi = 0, si = 0
        var star: Int?, starMatch = 0
        while si < s.count {
            if pi < p.count, p[pi] != UInt8(ascii: "*"), p[pi] == s[si] {
                pi += 1; si += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi; starMatch = si; pi += 1
            } else if let st = star {
                pi = st + 1; starMatch += 1; si = starMatch
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

/// A pattern no repository name could match as written.
public struct RepositoryPatternError: Error, Sendable, Equatable, CustomStringConvertible {
    public let pattern: String
    public let message: String
    public init(pattern: String, _ message: String) {
        self.pattern = pattern
        self.message = message
    }
    public var description: String { "pattern \"\(pattern)\" \(message)" }
}

/// Which repositories of one registry clients may use: deny wins over allow; without an allow list every
/// repository not denied is allowed.
public struct RepositoryPolicy: Sendable, Equatable {
    /// nil: every repository is allowed (unless denied).
    public var allow: [RepositoryPattern]?
    public var deny: [RepositoryPattern]

    public init(allow: [RepositoryPattern]? = nil, deny: [RepositoryPattern] = []) {
        self.allow = allow
        self.deny = deny
    }

    /// Everything allowed.
    public static let open = RepositoryPolicy()

    /// True when clients may use `repository` (the upstream's name, e.g. `library/busybox`).
    public func permits(_ repository: String) -> Bool {
        if deny.contains(where: { $0.matches(repository) }) { return false }
        guard let allow else { return true }
        return allow.contains { $0.matches(repository) }
    }
}
