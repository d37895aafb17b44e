import Foundation

/// An Apache htpasswd file restricted to bcrypt hashes, as `htpasswd -B` writes them (`user:$2y$10$…`).
///
/// Format (Apache `htpasswd(1)`): one `user:hash` per line; blank lines and lines starting with `#` are skipped.
/// Only bcrypt (`$2y$`, `$2a$`, `$2b$`) is accepted: MD5-crypt (`$apr1$`), SHA-1 (`{SHA}`), crypt(3) and plain
/// text are fast to brute-force and are refused at load. Error messages name the line number and the user,
/// never the hash.
public struct Htpasswd: Sendable, Equatable {
    /// User name → bcrypt hash, with `$2y$` rewritten as `$2b$` (the same algorithm; the OpenBSD bcrypt that
    /// `HummingbirdBcrypt` wraps knows only the `a` and `b` minor versions).
    public let users: [String: String]

    public init(users: [String: String]) { self.users = users }

    /// Parses the text of an htpasswd file.
    /// - Throws: `HtpasswdError` naming the first bad line (1-based): no `:`, an empty user, a user listed
    ///   twice, or a hash that is not a well-formed bcrypt hash.
    public static func parse(_ text: String) throws(HtpasswdError) -> Htpasswd {
        var users: [String: String] = [:]
        // "\r\n" is one Character in Swift: split on both line ends.
        for (i, line) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            let number = i + 1
            guard let colon = line.firstIndex(of: ":") else {
                throw HtpasswdError(line: number, "expected user:hash")
            }
            let user = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            guard !user.isEmpty else { throw HtpasswdError(line: number, "empty user name") }
            guard users[user] == nil else { throw HtpasswdError(line: number, "user \(user) is listed twice") }
            guard let normalized = bcryptHash(hash) else {
                throw HtpasswdError(line: number, "user \(user): only bcrypt hashes ($2y$, $2a$, $2b$; htpasswd -B) are accepted")
            }
            users[user] = normalized
        }
        return Htpasswd(users: users)
    }

    /// Reads and parses the file at `path`.
    /// - Throws: `HtpasswdError` (line nil when the file cannot be read).
    public static func load(path: String) throws(HtpasswdError) -> Htpasswd {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HtpasswdError(line: nil, "cannot read \(path)")
        }
        return try parse(text)
    }

    /// The hash in the form `Bcrypt.verify` takes, or nil when it is not `$2[aby]$NN$` + 53 characters of
    /// bcrypt's base-64 alphabet (cost 4…31).
    static func bcryptHash(_ hash: String) -> String? {
        let bytes = Array(hash.utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"), bytes[3] == UInt8(ascii: "$"),
              bytes[6] == UInt8(ascii: "$"),
              let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost),
              bytes[7...].allSatisfy({ alphabet.contains($0) }) else { return nil }
        switch bytes[2] {
        case UInt8(ascii: "a"), UInt8(ascii: "b"): return hash
        case UInt8(ascii: "y"): return "$2b$" + hash.dropFirst(4)
        default: return nil
        }
    }

    private static let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
}

/// A malformed htpasswd file: the line (1-based) and what is wrong, never the hash itself.
public struct HtpasswdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// 1-based line number; nil when the file itself could not be read.
    public let line: Int?
    public let message: String
    public init(line: Int?, _ message: String) {
        self.line = line
        self.message = message
    }
    public var description: String { line.map { "line \($0): \(message)" } ?? message }
}
