/// One challenge from a `WWW-Authenticate` header (RFC 7235 §4.1), e.g.
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"`.
///
/// Docker's token spec ("Token Authentication Specification") puts `realm`, `service` and `scope` in a Bearer
/// challenge; distribution's htpasswd mode sends `Basic realm="..."`.
public struct AuthChallenge: Sendable, Equatable {
    /// Lowercased scheme: `bearer`, `basic`, ...
    public var scheme: String
    /// Auth parameters with lowercased names; quoted values unescaped.
    public var parameters: [String: String]

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    /// Space-separated scopes as sent (several may share one challenge).
    public var scope: String? { parameters["scope"] }

    /// Parses every challenge in a header value. Malformed trailing input ends parsing; what parsed is kept.
    public static func parse(_ header: String) -> [AuthChallenge] {
        var p = Parser(Array(header.utf8))
        var out: [AuthChallenge] = []
        while true {
            p.skip(whitespaceAndCommas: true)
            guard let scheme = p.token(), !scheme.isEmpty else { break }
            var params: [String: String] = [:]
            while true {
                p.skip(whitespaceAndCommas: false)
                let save = p.i
                guard let name = p.token(), !name.isEmpty else { break }
                p.skip(whitespaceAndCommas: false)
                guard p.peek == UInt8(ascii: "=") else { p.i = save; break } // next challenge's scheme
                p.i += 1
                p.skip(whitespaceAndCommas: false)
                guard let value = p.peek == UInt8(ascii: "\"") ? p.quoted() : p.token() else { return out }
                params[name.lowercased()] = value
                p.skip(whitespaceAndCommas: false)
                if p.peek == UInt8(ascii: ",") { p.i += 1 } else { break }
            }
            out.append(AuthChallenge(scheme: scheme.lowercased(), parameters: params))
        }
        return out
    }

    struct Parser {
        let b: [UInt8]
        var i = 0
        init(_ b: [UInt8]) { self.b = b }
        var peek: UInt8? { i < b.count ? b[i] : nil }
        mutating func skip(whitespaceAndCommas: Bool) {
            while let c = peek, c == 0x20 || c == 0x09 || (whitespaceAndCommas && c == UInt8(ascii: ",")) { i += 1 }
        }
        /// RFC 7230 token characters (plus `/` and `:` which real registries put unquoted in token68-ish values).
        mutating func token() -> String? {
            let start = i
            while let c = peek, c > 0x20, c < 0x7F, !"\"(),;<=>?@[\\]{}".utf8.contains(c) || c == UInt8(ascii: "/") { i += 1 }
            return String(decoding: b[start..<i], as: UTF8.self)
        }
        mutating func quoted() -> String? {
            i += 1
            var out: [UInt8] = []
            while let c = peek {
                i += 1
                if c == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if c == UInt8(ascii: "\\"), let n = peek { out.append(n); i += 1 } else { out.append(c) }
            }
            return nil
        }
    }
}
