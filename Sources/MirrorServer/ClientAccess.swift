import Access
import Foundation
import HTTPTypes
import Logging
import OCI

/// Who may use this Cove, and for which repositories: the gate every request passes before any `Mirror` call.
///
/// - Client authentication (`auth:`): HTTP Basic against an htpasswd file (`CredentialVerifier`). A client
///   without credentials, or with an empty user and password (skopeo sends `Basic Og==` after a Basic
///   challenge it has no credentials for), is anonymous; what it may do is `anonymous`. Wrong credentials are
///   401 whatever `anonymous` says. Refusals are 401 `UNAUTHORIZED` with `WWW-Authenticate: Basic realm="cove"`.
/// - Repository policies (`repositories:` per registry): a refused repository is 403 `DENIED` before the cache
///   or the upstream is asked, cached or not.
/// - `/healthz` and `/readyz` never need credentials (`exemptPaths`). With `auth` on, paths outside the registry
///   API (`/v2/...`: the status page, `/metrics`) need a valid user whatever `anonymous` says.
public final class ClientAccess: Sendable {
    /// nil: no `auth:` configured, every client is anonymous and may pull.
    public let verifier: CredentialVerifier?
    public let anonymous: AnonymousAccess
    /// Canonical registry name → its policy; registries not listed allow every repository.
    public let repositories: [String: RepositoryPolicy]
    let logger: Logger

    /// The Basic challenge's realm.
    public static let realm = "cove"
    /// Paths anyone may request: load balancers and orchestrators probe them without credentials.
    public static let exemptPaths: Set<String> = ["/healthz", "/readyz"]
    static let challenge: [(String, String)] = [("WWW-Authenticate", "Basic realm=\"\(realm)\"")]

    /// - Parameters:
    ///   - verifier: the htpasswd users; nil for no client authentication (then `anonymous` is `.pull`).
    public init(verifier: CredentialVerifier? = nil, anonymous: AnonymousAccess = .pull, repositories: [String: RepositoryPolicy] = [:],
                logger: Logger = Logger(label: "cove.access")) {
        self.verifier = verifier
        self.anonymous = verifier == nil ? .pull : anonymous
        self.repositories = repositories
        self.logger = logger
    }

    /// No authentication and no repository rules: today's open mirror.
    public static let open = ClientAccess()

    /// The client behind one request.
    public enum Client: Sendable, Equatable {
        case anonymous
        case user(String)

        /// The user name, nil when anonymous.
        public var name: String? {
            if case .user(let name) = self { return name }
            return nil
        }
    }

    /// What a request may do once admitted.
    public struct Admission: Sendable, Equatable {
        public var client: Client
        /// Answer only from the cache (an anonymous client under `anonymous: cached`).
        public var cacheOnly: Bool
    }

    /// Authenticates the request.
    /// - Throws: `UNAUTHORIZED` (401, Basic challenge) for wrong credentials, a malformed `Authorization`,
    ///   or an anonymous client when `anonymous` is `none` (every path but `exemptPaths`).
    public func admit(path: String, authorization: String?) async throws(DistributionError) -> Admission {
        if Self.exemptPaths.contains(path) { return Admission(client: .anonymous, cacheOnly: false) }
        guard let verifier else { return Admission(client: .anonymous, cacheOnly: false) }
        switch Self.basicCredentials(authorization) {
        case .malformed:
            throw Self.unauthorized("the Authorization header is not HTTP Basic credentials")
        case .none:
            // `anonymous` is about pulling: the status page, /metrics and anything else outside the registry
            // API always need a user once `auth` is configured.
            guard path == "/v2" || path.hasPrefix("/v2/") else { throw Self.unauthorized("authentication required") }
            switch anonymous {
            case .none: throw Self.unauthorized("authentication required")
            case .cached: return Admission(client: .anonymous, cacheOnly: true)
            case .pull: return Admission(client: .anonymous, cacheOnly: false)
            }
        case .credentials(let user, let password):
            guard await verifier.verify(username: user, password: password) else {
                // The user name only: never the password or the header.
                // Quoted and escaped: the name is the client's, and a line break in it would forge log lines.
                logger.notice("client authentication failed", metadata: ["user": "\(String(user.prefix(64)).debugDescription)"])
                throw Self.unauthorized("invalid user name or password")
            }
            return Admission(client: .user(user), cacheOnly: false)
        }
    }

    /// Refuses a repository its registry's policy does not allow.
    /// - Parameters:
    ///   - registry: the canonical registry name (`docker.io`).
    ///   - repository: the name as the upstream knows it (`library/busybox`).
    /// - Throws: `DENIED` (403).
    public func checkRepository(registry: String, repository: String) throws(DistributionError) {
        guard let policy = repositories[registry], !policy.permits(repository) else { return }
        logger.notice("refused repository", metadata: ["registry": "\(registry)", "repository": "\(repository)"])
        throw DistributionError(.denied, "repository \(repository) on \(registry) is not allowed on this mirror")
    }

    /// 401 `UNAUTHORIZED` with the Basic challenge.
    public static func unauthorized(_ message: String) -> DistributionError {
        DistributionError(.unauthorized, message, headers: challenge)
    }

    enum BasicCredentials: Equatable {
        case none
        case malformed
        case credentials(String, String)
    }

    /// Parses `Authorization: Basic base64(user:password)` (RFC 7617). Absent, or empty user and password,
    /// is `.none`; another scheme or bad base-64 is `.malformed`.
    static func basicCredentials(_ header: String?) -> BasicCredentials {
        guard let header, !header.isEmpty else { return .none }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "basic",
              let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":") else { return .malformed }
        let user = String(text[..<colon]), password = String(text[text.index(after: colon)...])
        if user.isEmpty, password.isEmpty { return .none }
        return .credentials(user, password)
    }
}
