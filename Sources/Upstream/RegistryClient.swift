import Foundation
import Logging
import OCI
import Synchronization

/// One upstream registry reached through an ordered list of endpoints, with failover between them.
///
/// Connection errors, timeouts, 5xx and 429 move to the next endpoint and cool the failing one down (for
/// `cooldown` seconds, or the 429's `Retry-After`); 404, 401 and 403 move on without a cool-down (a mirror may
/// simply lack the content). Tags resolve only on endpoints trusted to resolve them; content by digest may come
/// from any endpoint because Cove verifies it.
public final class RegistryClient: Sendable {
    public let configuration: RegistryConfiguration
    public let endpoints: [Endpoint]
    let logger: Logger

    /// One endpoint with its client and health.
    public final class Endpoint: Sendable {
        public let client: UpstreamClient
        let health = Mutex(Health())

        struct Health {
            var coolUntil: ContinuousClock.Instant?
            var rateLimited = false
            var lastError: String?
        }

        init(client: UpstreamClient) { self.client = client }

        /// Seconds left in this endpoint's cool-down, or nil when it is usable.
        public func coolingFor(now: ContinuousClock.Instant = .now) -> Double? {
            health.withLock { h in
                guard let until = h.coolUntil, until > now else { return nil }
                let d = until - now
                return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            }
        }

        /// The last failure that cooled this endpoint down, if any.
        public var lastError: String? { health.withLock { $0.lastError } }
    }

    public init(configuration: RegistryConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        let policy = RealmPolicy(extraHosts: configuration.authHosts)
        endpoints = configuration.endpoints.map {
            Endpoint(client: UpstreamClient(configuration: $0, realmPolicy: policy, logger: logger))
        }
    }

    /// The registry name, e.g. `docker.io`: its identity in the cache index.
    public var name: String { configuration.name }

    /// The repository name as the upstream knows it: `library/x` for a one-component `x` on Docker Hub.
    public func upstreamName(for name: RepositoryName) -> RepositoryName {
        guard configuration.libraryPrefix, name.components.count == 1 else { return name }
        return (try? name.prefixed(with: "library")) ?? name
    }

    /// GET or HEAD a manifest; by tag only on trusted endpoints. See `UpstreamClient.manifest`.
    /// - Parameters:
    ///   - quick: bound each attempt by the connect timeout (tag revalidation with a cached answer waiting).
    ///   - verify: checks a response; a non-nil answer (why it is wrong) cools the endpoint down and moves on
    ///     to the next one, so a mirror serving bad bytes cannot block content the trusted endpoint has.
    /// - Throws: the most telling `UpstreamError` when every endpoint failed.
    public func manifest(_ name: RepositoryName, _ reference: Reference, method: String, quick: Bool = false,
                         verify: (@Sendable (UpstreamResponse) -> String?)? = nil) async throws(UpstreamError) -> UpstreamResponse {
        let byTag = if case .tag = reference { true } else { false }
        return try await failover(trustedOnly: byTag) { (c) throws(UpstreamError) in
            let response = try await c.manifest(name, reference, method: method, quick: quick)
            if let problem = verify?(response) { throw .invalidContent(problem) }
            return response
        }
    }

    /// Streams a blob into `sink` from the first endpoint that has it, starting at `offset()` (read again for
    /// every endpoint tried, so a transfer cut on one endpoint resumes on the next where it stopped).
    /// - Throws: `UpstreamError`.
    /// - Returns: the response head and the endpoint that served it (to blame if the bytes fail verification).
    public func blob(_ name: RepositoryName, _ digest: Digest, from offset: @escaping @Sendable () -> Int64, into sink: BodySink) async throws(UpstreamError) -> (ResponseHead, Endpoint) {
        try await failover(trustedOnly: false) { (c) throws(UpstreamError) in
            (try await c.blob(name, digest, from: offset(), into: sink), endpoints.first { $0.client === c }!)
        }
    }

    /// Cools `endpoint` down because content it served failed verification: the next attempt (the next
    /// request for that blob) goes to another endpoint.
    public func reportInvalidContent(from endpoint: Endpoint, _ reason: String) {
        coolDown(endpoint, seconds: configuration.cooldown, rateLimited: false, error: "content failed verification: \(reason)")
    }

    private func coolDown(_ endpoint: Endpoint, seconds: Double, rateLimited: Bool, error: String) {
        let wait = min(seconds, 86_400)
        endpoint.health.withLock {
            $0.coolUntil = .now + .milliseconds(Int64(wait * 1000))
            $0.rateLimited = rateLimited
            $0.lastError = error
        }
        logger.warning("upstream endpoint failed; cooling it down", metadata: [
            "registry": "\(name)", "endpoint": "\(endpoint.client.configuration.url)", "cooldown_s": "\(wait)", "error": "\(error)",
        ])
    }

    /// HEAD a blob on the first endpoint that has it.
    /// - Throws: `UpstreamError`.
    public func blobHead(_ name: RepositoryName, _ digest: Digest) async throws(UpstreamError) -> ResponseHead {
        try await failover(trustedOnly: false) { (c) throws(UpstreamError) in try await c.blobHead(name, digest) }
    }

    /// The tag list, from trusted endpoints only.
    /// - Throws: `UpstreamError`.
    public func tags(_ name: RepositoryName, query: String) async throws(UpstreamError) -> UpstreamResponse {
        try await failover(trustedOnly: true) { (c) throws(UpstreamError) in try await c.tags(name, query: query) }
    }

    private enum Verdict { case coolDown(seconds: Double, rateLimited: Bool), next, stop }

    private func verdict(_ error: UpstreamError) -> Verdict {
        switch error {
        case .transport: return .coolDown(seconds: configuration.cooldown, rateLimited: false)
        case .status(let head, _):
            if head.status == 429 {
                let wait = RateLimitStatus.retryAfter(head["Retry-After"]).map { min($0, 3600) } ?? configuration.cooldown
                return .coolDown(seconds: wait, rateLimited: true)
            }
            if head.status >= 500 { return .coolDown(seconds: configuration.cooldown, rateLimited: false) }
            return .next
        case .invalidContent: return .coolDown(seconds: configuration.cooldown, rateLimited: false)
        // A refused address is the same answer next time and sent nothing, so a cool-down would protect nothing.
        case .auth, .redirect, .refusedAddress: return .next
        case .aborted: return .stop
        }
    }

    /// Runs `operation` on the usable endpoints in order until one succeeds.
    ///
    /// Endpoints cooling down are skipped. If every candidate is cooling down, the one whose cool-down ends
    /// first is tried anyway (a single-endpoint registry must not go dark for a blip), unless it is cooling
    /// for a 429: then the caller gets a 429 with the remaining wait as `Retry-After`, and no request is sent.
    func failover<T: Sendable>(trustedOnly: Bool, _ operation: (UpstreamClient) async throws(UpstreamError) -> T) async throws(UpstreamError) -> T {
        let candidates = endpoints.filter { !trustedOnly || $0.client.configuration.resolveTags }
        guard !candidates.isEmpty else { throw .auth("registry \(name) has no endpoint trusted to resolve tags") }
        let now = ContinuousClock.now
        var order = candidates.filter { $0.coolingFor(now: now) == nil }
        if order.isEmpty {
            let soonest = candidates.min { ($0.coolingFor(now: now) ?? 0) < ($1.coolingFor(now: now) ?? 0) }!
            if soonest.health.withLock({ $0.rateLimited }) {
                let wait = Int((soonest.coolingFor(now: now) ?? 1).rounded(.up))
                throw .status(ResponseHead(status: 429, headers: [("Retry-After", String(max(1, wait)))]),
                              body: Array(#"{"errors":[{"code":"TOOMANYREQUESTS","message":"every endpoint is rate limited"}]}"#.utf8))
            }
            order = [soonest]
        }
        var errors: [UpstreamError] = []
        for endpoint in order {
            do {
                let result = try await operation(endpoint.client)
                endpoint.health.withLock { $0 = .init() }
                return result
            } catch {
                var error = error
                switch verdict(error) {
                case .stop: throw error
                case .next: break
                case .coolDown(let seconds, let rateLimited):
                    coolDown(endpoint, seconds: seconds, rateLimited: rateLimited, error: "\(error)")
                    // A 429 always tells the client when to come back, even if the upstream did not.
                    if rateLimited, case .status(var head, let body) = error, head["Retry-After"] == nil {
                        head.headers.append(("Retry-After", String(Int(min(seconds, 86_400).rounded(.up)))))
                        error = .status(head, body: body)
                    }
                }
                errors.append(error)
            }
        }
        throw Self.mostTelling(errors)
    }

    /// 404 when every endpoint said 404; else a 429 if any endpoint was rate limited; else the first error.
    static func mostTelling(_ errors: [UpstreamError]) -> UpstreamError {
        func status(_ e: UpstreamError) -> Int? { if case .status(let h, _) = e { h.status } else { nil } }
        if errors.allSatisfy({ status($0) == 404 }) { return errors[0] }
        if let limited = errors.first(where: { status($0) == 429 }) { return limited }
        return errors.first { status($0) != 404 } ?? errors[0]
    }
}
