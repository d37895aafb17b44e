import Foundation
import Logging
import OCI
import Synchronization

/// The registry API client for one upstream: builds `/v2/` requests, authenticates (anonymous or credentialed
/// bearer tokens, HTTP basic), follows redirects without leaking `Authorization`, and returns small bodies
/// buffered or streams blob bodies into a `BodySink`.
///
/// Auth follows Docker's token spec: a 401 with `WWW-Authenticate: Bearer realm=..,service=..,scope=..` makes
/// the client fetch a token from the realm (with basic credentials if configured), cache it per
/// realm/service/scope until it expires, and retry once. Once the upstream's scheme is known, later requests
/// send a (cached) token up front instead of collecting a 401 first.
public final class UpstreamClient: Sendable {
    public let configuration: UpstreamConfiguration
    let tokens = TokenCache()
    let logger: Logger

    /// What the upstream asked for last time, so the next request can authenticate up front.
    enum AuthHint: Sendable { case basic, bearer(realm: String, service: String) }
    private let hint = Mutex<AuthHint?>(nil)
    /// Which hosts may serve token realms for this endpoint.
    public let realmPolicy: RealmPolicy
    private let lastRateLimit = Mutex<RateLimitStatus?>(nil)
    /// The class of the address this endpoint's own connections used last (see `AddressPolicy`).
    let endpointAddressClass = Mutex<AddressClass?>(nil)

    /// The rate-limit headers this endpoint sent most recently, if it ever sent any.
    public var rateLimit: RateLimitStatus? { lastRateLimit.withLock { $0 } }

    /// Largest manifest accepted from an upstream, in bytes (distribution's own limit is 4 MiB).
    public static let manifestSizeLimit = 4 * 1024 * 1024

    /// The registry name sent as `?ns=` on every registry API request when the endpoint is a mirror
    /// (`UpstreamConfiguration.mirror`), else nil.
    public let namespace: String?

    /// - Parameter registryName: the registry this endpoint serves; sent as `ns=` when the endpoint is a mirror.
    public init(configuration: UpstreamConfiguration, realmPolicy: RealmPolicy = RealmPolicy(extraHosts: []), registryName: String? = nil, logger: Logger) {
        self.configuration = configuration
        namespace = configuration.mirror ? registryName : nil
        self.realmPolicy = realmPolicy
        self.logger = logger
    }

    /// GET or HEAD `/v2/<name>/manifests/<reference>` asking for every manifest media type.
    /// - Returns: the response (body buffered, at most `manifestSizeLimit` bytes). Non-2xx statuses throw.
    /// - Throws: `UpstreamError`.
    /// - Parameter quick: bound the whole exchange (token included) by the connect timeout, not the request
    ///   timeout. For revalidating a cached tag: a black-holed upstream behind a pooled connection cannot be told
    ///   from a slow one except by the clock, and a cached answer is waiting.
    /// - Parameter deadline: the operation's deadline (token, 401 retry and redirects included).
    public func manifest(_ name: RepositoryName, _ reference: Reference, method: String, quick: Bool = false, deadline: Deadline = .none) async throws(UpstreamError) -> UpstreamResponse {
        var limits = configuration.requestLimits
        if quick { limits.totalTimeout = max(0.1, limits.connectTimeout) }
        limits.deadline = deadline
        return try await send(method: method, path: "/v2/\(name.value)/manifests/\(reference)", scope: name,
                              headers: MediaType.manifestAccept.map { ("Accept", $0) }, sink: nil,
                              bufferLimit: Self.manifestSizeLimit, limits: limits)
    }

    /// GET `/v2/<name>/blobs/<digest>` streaming the body into `sink`, from byte `offset` (a `Range` request
    /// when > 0). Asks for `Accept-Encoding: identity` so the stored bytes are exactly the digested ones.
    /// - Parameter headDeadline: when the response head (after token, 401 retry and redirects, e.g. from a CDN)
    ///   must have arrived; the body itself is bounded by the low-speed rule only.
    /// - Returns: the head of the final (2xx) response after redirects.
    /// - Throws: `UpstreamError`.
    public func blob(_ name: RepositoryName, _ digest: Digest, from offset: Int64 = 0, into sink: BodySink, headDeadline: Deadline = .none) async throws(UpstreamError) -> ResponseHead {
        var headers = [("Accept-Encoding", "identity")]
        if offset > 0 { headers.append(("Range", "bytes=\(offset)-")) }
        var limits = configuration.blobLimits
        limits.deadline = headDeadline
        return try await send(method: "GET", path: "/v2/\(name.value)/blobs/\(digest)", scope: name, headers: headers,
                              sink: sink, bufferLimit: 0, limits: limits).head
    }

    /// HEAD `/v2/<name>/blobs/<digest>`: size and digest without a body.
    /// - Throws: `UpstreamError`.
    public func blobHead(_ name: RepositoryName, _ digest: Digest, deadline: Deadline = .none) async throws(UpstreamError) -> ResponseHead {
        try await send(method: "HEAD", path: "/v2/\(name.value)/blobs/\(digest)", scope: name,
                       headers: [("Accept-Encoding", "identity")], sink: nil, bufferLimit: 0,
                       limits: configuration.requestLimits(within: deadline)).head
    }

    /// GET `/v2/<name>/tags/list` with an already-encoded query (`n`, `last`), body buffered (≤ 4 MiB).
    /// - Throws: `UpstreamError`.
    public func tags(_ name: RepositoryName, query: String, deadline: Deadline = .none) async throws(UpstreamError) -> UpstreamResponse {
        try await send(method: "GET", path: "/v2/\(name.value)/tags/list" + (query.isEmpty ? "" : "?" + query), scope: name,
                       headers: [("Accept", "application/json")], sink: nil, bufferLimit: Self.manifestSizeLimit,
                       limits: configuration.requestLimits(within: deadline))
    }

    /// GET `/v2/` (the API version check), authenticating if challenged.
    /// - Throws: `UpstreamError`.
    public func ping() async throws(UpstreamError) -> UpstreamResponse {
        try await send(method: "GET", path: "/v2/", scope: nil, headers: [], sink: nil, bufferLimit: 64 * 1024,
                       limits: configuration.requestLimits)
    }

    // MARK: - Auth and redirects

    func send(method: String, path: String, scope name: RepositoryName?, headers: [(String, String)], sink: BodySink?,
              bufferLimit: Int, limits: TransferLimits) async throws(UpstreamError) -> UpstreamResponse {
        let scope = name.map { "repository:\($0.value):pull" }
        var authorization = try await upfrontAuthorization(scope: scope, limits: limits)
        var retried = false
        while true {
            let response = try await follow(method: method, url: configuration.url + Self.namespaced(path, namespace), headers: headers,
                                             authorization: authorization, sink: sink, bufferLimit: bufferLimit, limits: limits)
            if response.head.status == 401, !retried {
                retried = true
                authorization = try await authorize(after: response.head, scope: scope, stale: authorization, limits: limits)
                continue
            }
            guard response.head.isSuccess else { throw .status(response.head, body: response.body) }
            return response
        }
    }

    /// The `Authorization` to send before any challenge, from what the upstream asked last time.
    private func upfrontAuthorization(scope: String?, limits: TransferLimits) async throws(UpstreamError) -> String? {
        switch hint.withLock({ $0 }) {
        case .basic: return configuration.credentials?.basicAuthorization
        case .bearer(let realm, let service):
            guard let scope else { return nil }
            return "Bearer " + (try await token(realm: realm, service: service, scopes: [scope], limits: limits))
        case nil: return nil
        }
    }

    /// Answers a 401: picks the challenge, gets credentials for it. A token that was just refused is dropped
    /// from the cache so a fresh one is fetched.
    private func authorize(after head: ResponseHead, scope: String?, stale: String?, limits: TransferLimits) async throws(UpstreamError) -> String {
        let challenges = head.values("WWW-Authenticate").flatMap(AuthChallenge.parse)
        if let bearer = challenges.first(where: { $0.scheme == "bearer" }) {
            guard let realm = bearer.realm else { throw .auth("Bearer challenge without realm") }
            let service = bearer.service ?? ""
            var scopes = bearer.scope.map { $0.split(separator: " ").map(String.init) } ?? []
            if scopes.isEmpty, let scope { scopes = [scope] }
            if stale != nil { tokens.remove(.init(realm: realm, service: service, scope: scopes.joined(separator: " "))) }
            let token = try await token(realm: realm, service: service, scopes: scopes, limits: limits)
            // Remembered only once it worked: a refused or failing realm must not stick to the endpoint.
            hint.withLock { $0 = .bearer(realm: realm, service: service) }
            return "Bearer " + token
        }
        if challenges.contains(where: { $0.scheme == "basic" }) {
            hint.withLock { $0 = .basic }
            guard let credentials = configuration.credentials, stale == nil else {
                throw .status(head, body: Array(#"{"errors":[{"code":"UNAUTHORIZED","message":"upstream requires credentials"}]}"#.utf8))
            }
            return credentials.basicAuthorization
        }
        throw .status(head, body: [])
    }

    /// A bearer token for `scopes` at `realm`, from the cache or the token endpoint.
    private func token(realm: String, service: String, scopes: [String], limits: TransferLimits) async throws(UpstreamError) -> String {
        let key = TokenCache.Key(realm: realm, service: service, scope: scopes.joined(separator: " "))
        if let cached = tokens.token(for: key) { return cached }
        guard let realmParts = URLParts(realm) else { throw .auth("token realm \(realm.prefix(200)) is not an http(s) URL") }
        let endpointHost = URLParts(configuration.url)?.host ?? ""
        guard realmPolicy.allows(realmHost: realmParts.host, endpointHost: endpointHost) else {
            logger.error("refusing token realm on a host not allowed for this registry", metadata: [
                "realm": "\(realmParts.origin)", "endpoint": "\(configuration.url)",
            ])
            throw .auth("token realm \(realmParts.origin) is not allowed for \(endpointHost) (add it to auth_hosts if it is genuine)")
        }
        var query: [String] = []
        if !service.isEmpty { query.append("service=" + Self.formEncode(service)) }
        query += scopes.map { "scope=" + Self.formEncode($0) }
        let url = realm + (realm.contains("?") ? "&" : "?") + query.joined(separator: "&")
        // Credentials go to the realm only: that is where the upstream told us to authenticate.
        let authorization = configuration.credentials?.basicAuthorization
        let response = try await follow(method: "GET", url: url, headers: [("Accept", "application/json")],
                                        authorization: authorization, sink: nil, bufferLimit: 1024 * 1024,
                                        limits: limits.totalTimeout > 0 ? limits : configuration.requestLimits(within: limits.deadline))
        guard response.head.isSuccess else {
            throw .auth("token endpoint \(realmParts.origin) answered \(response.head.status)")
        }
        guard let (token, expiresIn) = TokenCache.parseResponse(response.body) else {
            throw .auth("token endpoint \(realmParts.origin) sent no token")
        }
        logger.debug("fetched upstream token", metadata: ["realm": "\(realmParts.origin)", "scope": "\(key.scope)", "expires_in": "\(expiresIn)"])
        tokens.store(token, for: key, expiresIn: expiresIn)
        return token
    }

    /// Runs a request, following up to 5 redirects. `Authorization` is sent only while the URL stays on the
    /// origin it was meant for; once a redirect leaves it (e.g. Docker Hub → CDN), it is never sent again.
    /// Redirect targets are used once and never cached (they are signed and short-lived). Every hop obeys the
    /// address rules (`AddressPolicy`); a refused one throws `.refusedAddress`.
    func follow(method: String, url start: String, headers: [(String, String)], authorization: String?, sink: BodySink?,
                bufferLimit: Int, limits: TransferLimits) async throws(UpstreamError) -> UpstreamResponse {
        guard let origin = URLParts(start) else { throw .redirect("not an http(s) URL: \(start)") }
        var url = start
        var sendAuthorization = authorization != nil
        for _ in 0...5 {
            var lines = headers.map { "\($0.0): \($0.1)" }
            if sendAuthorization, let authorization { lines.append("Authorization: \(authorization)") }
            let transfer = CurlTransfer(method: method, url: url, headers: lines, sink: sink,
                                        successBufferLimit: bufferLimit, limits: limits)
            transfer.addressGate = addressGate(for: url)
            let (head, body) = try await runGated(transfer, asked: start)
            if let status = RateLimitStatus(head) { lastRateLimit.withLock { $0 = status } }
            if [301, 302, 303, 307, 308].contains(head.status), let location = head["Location"] {
                guard let next = URLParts.resolve(location, against: url), let nextParts = URLParts(next) else {
                    throw .redirect("unusable Location \(location.prefix(200))")
                }
                if !nextParts.sameOrigin(origin) { sendAuthorization = false }
                logger.debug("following upstream redirect", metadata: ["status": "\(head.status)", "to": "\(nextParts.origin)"])
                url = next
                continue
            }
            return UpstreamResponse(head: head, body: body, url: url)
        }
        throw .redirect("more than 5 redirects")
    }

    /// `application/x-www-form-urlencoded` value encoding for query parameters.
    static func formEncode(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
