import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// A Docker token server (the `realm` of a `WWW-Authenticate: Bearer` challenge) on its own loopback port and,
/// if asked, its own loopback address (Aliyun's realm lives on another host than its registry: 127.0.0.2 here).
///
/// `GET /token?service=..&scope=..&scope=..` answers `{"token","access_token","expires_in","issued_at"}` with an
/// opaque token (not a JWT: a `FaultUpstream` with a `BearerGate` asks this realm whether it issued it). Every
/// request is recorded with its scopes (each `scope` parameter separately) and `Authorization`.
///
/// Grants: a request with valid basic credentials gets every scope it asks for; an anonymous one gets the scopes
/// of public repositories only, and for private ones a token with empty access (Aliyun's behaviour), which the
/// registry then refuses. Wrong credentials answer 401.
final class TokenRealm: Sendable {
    struct Settings: Sendable {
        /// `expires_in` announced to the client, in seconds.
        var expiresIn: Int = 300
        /// How long the registry really accepts a token, in seconds (nil: `expiresIn`). Shorter than
        /// `expiresIn` models a token revoked or expired early.
        var serverLifetime: Double?
        /// username → password accepted with HTTP basic.
        var users: [String: String] = [:]
        /// Repositories anonymous tokens get no access to.
        var privateRepositories: Set<String> = []
        /// When set, every token request answers this status.
        var failWith: Int?
        /// When set, every token request is accepted and answered only after this many seconds (a stalled realm).
        var hangSeconds: Double?
    }

    struct Issued: Sendable {
        var token: String
        var user: String?
        /// Scopes granted, e.g. `repository:library/busybox:pull`.
        var granted: [String]
        var issuedAt: ContinuousClock.Instant
        var lifetime: Double
    }

    struct Request: Sendable {
        var service: String?
        /// Each `scope` query parameter, decoded, in order.
        var scopes: [String]
        var rawQuery: String
        var authorization: String?
        var host: String
    }

    /// What a registry learns about the token it was sent.
    enum Check: Equatable, Sendable {
        case valid
        /// No bearer token at all.
        case missing
        /// Not issued by this realm.
        case unknown
        case expired
        /// Issued, but without `pull` on the repository.
        case insufficientScope
    }

    let settings = Mutex(Settings())
    let issued = Mutex<[String: Issued]>([:])
    let requests = Mutex<[Request]>([])
    let host: String
    private let counter = Atomic<Int>(0)
    private let server = Mutex<RunningServer?>(nil)

    var port: Int { server.withLock { $0!.port } }
    /// The realm URL a registry puts into its challenge.
    var url: String { "http://\(host):\(port)/token" }

    private init(host: String) { self.host = host }

    static func start(host: String = "127.0.0.1") async throws -> TokenRealm {
        let realm = TokenRealm(host: host)
        let s = try await RunningServer(Responder(realm: realm), label: "token-realm", host: host)
        realm.server.withLock { $0 = s }
        return realm
    }

    func stop() { server.withLock { $0?.stop() } }

    /// Tokens handed out so far.
    var issuedCount: Int { issued.withLock { $0.count } }

    /// Whether `authorization` (a whole `Authorization` header value) carries a token from this realm that is
    /// still alive and grants pull on `repository` (nil: any live token will do, as for `/v2/`).
    func check(_ authorization: String?, repository: String?) -> Check {
        guard let authorization, authorization.hasPrefix("Bearer ") else { return .missing }
        let token = String(authorization.dropFirst(7))
        guard let t = issued.withLock({ $0[token] }) else { return .unknown }
        let age = ContinuousClock.now - t.issuedAt
        if Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18 >= t.lifetime { return .expired }
        guard let repository else { return .valid }
        let covers = t.granted.contains { scope in
            let parts = scope.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts[0] == "repository" else { return false }
            let name = parts[1..<(parts.count - 1)].joined(separator: ":")
            return name == repository && parts.last!.split(separator: ",").contains("pull")
        }
        return covers ? .valid : .insufficientScope
    }

    /// `application/x-www-form-urlencoded` query → ordered (name, value) pairs.
    static func parseQuery(_ query: String) -> [(String, String)] {
        query.split(separator: "&").map { pair in
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String {
                String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)
            }
            return (decode(kv[0]), kv.count > 1 ? decode(kv[1]) : "")
        }
    }

    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let realm: TokenRealm

        func respond(to request: Hummingbird.Request, context: Context) async throws -> Response {
            let rawQuery = request.uri.query ?? ""
            let query = TokenRealm.parseQuery(rawQuery)
            let authorization = request.headers[.authorization]
            let service = query.first { $0.0 == "service" }?.1
            let scopes = query.filter { $0.0 == "scope" }.map(\.1)
            realm.requests.withLock {
                $0.append(Request(service: service, scopes: scopes, rawQuery: rawQuery, authorization: authorization, host: realm.host))
            }
            let settings = realm.settings.withLock { $0 }
            if let seconds = settings.hangSeconds { try await Task.sleep(for: .milliseconds(Int(seconds * 1000))) }
            if let status = settings.failWith {
                return Response(status: .init(code: status), headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(string: #"{"details":"realm failure"}"#)))
            }
            var user: String?
            if let authorization {
                guard authorization.hasPrefix("Basic "),
                      let decoded = Data(base64Encoded: String(authorization.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
                      let colon = decoded.firstIndex(of: ":"),
                      settings.users[String(decoded[..<colon])] == String(decoded[decoded.index(after: colon)...]) else {
                    return Response(status: .unauthorized, headers: [.contentType: "application/json"],
                                    body: .init(byteBuffer: ByteBuffer(string: #"{"details":"incorrect username or password"}"#)))
                }
                user = String(decoded[..<colon])
            }
            let granted = scopes.filter { scope in
                if user != nil { return true }
                let parts = scope.split(separator: ":")
                return parts.count >= 3 && !settings.privateRepositories.contains(parts[1..<(parts.count - 1)].joined(separator: ":"))
            }
            let n = realm.counter.add(1, ordering: .relaxed).newValue
            let token = "tok-\(n)-\(UUID().uuidString.prefix(8))"
            realm.issued.withLock {
                $0[token] = Issued(token: token, user: user, granted: granted, issuedAt: .now,
                                   lifetime: settings.serverLifetime ?? Double(settings.expiresIn))
            }
            let issuedAt = ISO8601DateFormatter().string(from: Date())
            let body = #"{"token":"\#(token)","access_token":"\#(token)","expires_in":\#(settings.expiresIn),"issued_at":"\#(issuedAt)"}"#
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
        }
    }
}
