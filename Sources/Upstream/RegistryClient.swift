import Foundation
import Logging
import OCI
import Synchronization

/// One upstream registry reached through an ordered list of endpoints, with failover between them.
///
/// Every failure moves the request on to the next endpoint; only endpoint-level evidence also cools the
/// failing endpoint down for every client (for `cooldown` seconds, or the 429's `Retry-After`):
/// - endpoint faults: connection errors and timeouts, 429, a 5xx on `/v2/`, a 5xx on one path when a quick
///   `GET /v2/` (bounded by the connect timeout) fails too, and 5xx on several distinct paths within `cooldown`;
/// - request faults (no cool-down): 404, 401, 403, a 5xx on one path while `/v2/` answers (distribution gives
///   500 for a layer digest asked for as a manifest);
/// - object faults: content that fails verification. The (endpoint, object) pair is remembered for `cooldown`,
///   so the next request for that object tries other endpoints first; other objects are unaffected.
/// See `FaultScope` for the table. Tags resolve only on endpoints trusted to resolve them; content by digest may
/// come from any endpoint because Cove verifies it.
///
/// Each operation (manifest, blob HEAD, tag list, the wait for a blob's response head) runs under one
/// `Deadline` of `requestTimeout` seconds spanning token, 401 retry, redirects and failover; each endpoint
/// attempt gets a fair share of the time left, so a stalled first endpoint cannot starve the next.
public final class RegistryClient: Sendable {
    public let configuration: RegistryConfiguration
    public let endpoints: [Endpoint]
    let logger: Logger
    /// Attempt latencies, errors and cool-downs per endpoint.
    let metrics: UpstreamMetrics

    /// One endpoint with its client and health.
    public final class Endpoint: Sendable {
        public let client: UpstreamClient
        /// `host:port`, the endpoint's metrics label and its name in the access log.
        public let label: String
        let health = Mutex(Health())

        struct Health {
            var coolUntil: ContinuousClock.Instant?
            var rateLimited = false
            var lastError: String?
            /// Paths that got a 5xx recently (until when they count), for the several-paths rule.
            var failedPaths: [String: ContinuousClock.Instant] = [:]
            /// Objects this endpoint served bad content for, until when to try other endpoints first.
            var badObjects: [String: ContinuousClock.Instant] = [:]
        }

        init(client: UpstreamClient) {
            self.client = client
            self.label = client.configuration.endpointLabel
        }

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

        /// True while this endpoint is remembered as having served bad content for `object`.
        public func servedBad(_ object: String, now: ContinuousClock.Instant = .now) -> Bool {
            health.withLock { ($0.badObjects[object] ?? now) > now }
        }
    }

    /// - Parameter metrics: where attempt latencies, errors and cool-downs are recorded (default: the global
    ///   `MetricsSystem`).
    public init(configuration: RegistryConfiguration, logger: Logger, metrics: UpstreamMetrics = UpstreamMetrics()) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        let policy = RealmPolicy(extraHosts: configuration.authHosts)
        endpoints = configuration.endpoints.map {
            Endpoint(client: UpstreamClient(configuration: $0, realmPolicy: policy, registryName: configuration.name, logger: logger))
        }
    }

    /// The registry name, e.g. `docker.io`: its identity in the cache index.
    public var name: String { configuration.name }

    /// The repository name as the upstream knows it: `library/x` for a one-component `x` on Docker Hub.
    public func upstreamName(for name: RepositoryName) -> RepositoryName {
        guard configuration.libraryPrefix else { return name }
        return (try? DockerHub.officialName(name)) ?? name
    }

    /// Seconds one small operation may take in all, endpoints and retries included (the largest
    /// `requestLimits.totalTimeout` of the endpoints; 0 = no deadline).
    public var requestTimeout: Double { endpoints.map(\.client.configuration.requestLimits.totalTimeout).max() ?? 0 }

    /// A fresh deadline of `requestTimeout` seconds (`.none` when it is 0).
    public func operationDeadline() -> Deadline { requestTimeout > 0 ? Deadline(seconds: requestTimeout) : .none }

    /// GET or HEAD a manifest; by tag only on trusted endpoints. See `UpstreamClient.manifest`.
    /// - Parameters:
    ///   - quick: bound each attempt by the connect timeout (tag revalidation with a cached answer waiting).
    ///   - deadline: the whole operation's deadline (default: `requestTimeout` from now); pass one to share it
    ///     between a revalidation HEAD and the GET after it.
    ///   - verify: checks a response; a non-nil answer (why it is wrong) moves on to the next endpoint and makes
    ///     that endpoint the last choice for this manifest for `cooldown`, so a mirror serving bad bytes cannot
    ///     block content the trusted endpoint has (and is not blamed for other manifests).
    /// - Throws: the most telling `UpstreamError` when every endpoint failed.
    public func manifest(_ name: RepositoryName, _ reference: Reference, method: String, quick: Bool = false,
                         deadline: Deadline? = nil,
                         verify: (@Sendable (UpstreamResponse) -> String?)? = nil) async throws(UpstreamError) -> UpstreamResponse {
        let byTag = if case .tag = reference { true } else { false }
        let path = "/v2/\(name.value)/manifests/\(reference)"
        return try await failover(trustedOnly: byTag, path: path, object: "\(name.value)@\(reference)",
                                  deadline: deadline ?? operationDeadline()) { (c, d) throws(UpstreamError) in
            let response = try await c.manifest(name, reference, method: method, quick: quick, deadline: d)
            if let problem = verify?(response) { throw .invalidContent(problem) }
            return response
        }
    }

    /// Streams a blob into `sink` from the first endpoint that has it, starting at `offset()` (read again for
    /// every endpoint tried, so a transfer cut on one endpoint resumes on the next where it stopped).
    /// - Parameter headDeadline: when a response head must have arrived (shared fairly by the endpoints tried);
    ///   the body is bounded by the low-speed rule only.
    /// - Throws: `UpstreamError`.
    /// - Returns: the response head and the endpoint that served it (to blame if the bytes fail verification).
    public func blob(_ name: RepositoryName, _ digest: Digest, from offset: @escaping @Sendable () -> Int64, into sink: BodySink,
                     headDeadline: Deadline = .none) async throws(UpstreamError) -> (ResponseHead, Endpoint) {
        try await failover(trustedOnly: false, path: "/v2/\(name.value)/blobs/\(digest)", object: digest.description,
                           deadline: headDeadline) { (c, d) throws(UpstreamError) in
            let endpoint = endpoints.first { $0.client === c }!
            sink.attempting(endpoint: endpoint.label)
            return (try await c.blob(name, digest, from: offset(), into: sink, headDeadline: d), endpoint)
        }
    }

    /// Remembers that `endpoint` served content for `object` (a digest) that failed verification: for
    /// `cooldown` seconds the next requests for that object try the other endpoints first. The endpoint stays
    /// usable for everything else (one bad object is not endpoint-level evidence).
    public func reportInvalidContent(from endpoint: Endpoint, object: String, _ reason: String) {
        markBad(endpoint, object: object, reason: reason)
    }

    private func markBad(_ endpoint: Endpoint, object: String, reason: String) {
        let until = ContinuousClock.now + .milliseconds(Int64(min(configuration.cooldown, 86_400) * 1000))
        endpoint.health.withLock { h in
            h.badObjects = h.badObjects.filter { $0.value > .now }
            h.badObjects[object] = until
        }
        logger.warning("upstream endpoint served content that failed verification; other endpoints go first for it", metadata: [
            "registry": "\(name)", "endpoint": "\(endpoint.client.configuration.url)", "object": "\(object)", "error": "\(reason)",
        ])
    }

    private func coolDown(_ endpoint: Endpoint, seconds: Double, rateLimited: Bool, error: String) {
        let wait = min(seconds, 86_400)
        endpoint.health.withLock {
            $0.coolUntil = .now + .milliseconds(Int64(wait * 1000))
            $0.rateLimited = rateLimited
            $0.lastError = error
        }
        metrics.cooledDown(endpoint: endpoint.label)
        logger.warning("upstream endpoint failed; cooling it down", metadata: [
            "registry": "\(name)", "endpoint": "\(endpoint.client.configuration.url)", "cooldown_s": "\(wait)", "error": "\(error)",
        ])
    }

    /// HEAD a blob on the first endpoint that has it.
    /// - Throws: `UpstreamError`.
    public func blobHead(_ name: RepositoryName, _ digest: Digest) async throws(UpstreamError) -> ResponseHead {
        try await failover(trustedOnly: false, path: "/v2/\(name.value)/blobs/\(digest)", object: digest.description,
                           deadline: operationDeadline()) { (c, d) throws(UpstreamError) in try await c.blobHead(name, digest, deadline: d) }
    }

    /// The tag list, from trusted endpoints only.
    /// - Throws: `UpstreamError`.
    public func tags(_ name: RepositoryName, query: String) async throws(UpstreamError) -> UpstreamResponse {
        try await failover(trustedOnly: true, path: "/v2/\(name.value)/tags/list", object: nil,
                           deadline: operationDeadline()) { (c, d) throws(UpstreamError) in try await c.tags(name, query: query, deadline: d) }
    }

    /// Decides whether a 5xx on `path` is endpoint-level: `/v2/` fails too, or enough distinct repositories
    /// failed within the cool-down window (tags and blobs of one broken repository count once). The repository
    /// is remembered either way. For an endpoint that is itself a mirror (`mirror: true`, e.g. another Cove), a
    /// 5xx is that tier's answer about one request (its own upstream failed), so only `/v2/` decides.
    private func isEndpointFault(_ endpoint: Endpoint, path: String, deadline: Deadline) async -> Bool {
        if endpoint.client.configuration.mirror { return await endpoint.client.versionCheck(deadline: deadline) == .fails }
        let now = ContinuousClock.now
        let key = Self.repositoryKey(path)
        let (distinct, seenBefore) = endpoint.health.withLock { h -> (Int, Bool) in
            h.failedPaths = h.failedPaths.filter { $0.value > now }
            let seen = h.failedPaths[key] != nil
            h.failedPaths[key] = now + .milliseconds(Int64(min(configuration.cooldown, 86_400) * 1000))
            return (h.failedPaths.count, seen)
        }
        if distinct >= FaultScope.distinctPathsForEndpointFault { return true }
        // The same path failing again says nothing new; a first failure asks /v2/ (cheap, bounded).
        if seenBefore { return false }
        switch await endpoint.client.versionCheck(deadline: deadline) {
        case .fails: return true
        // Out of time is not evidence: the 5xx still counts towards the several-paths rule above.
        case .answers, .inconclusive: return false
        }
    }

    /// The repository part of an API path (`/v2/<name>/manifests/…` → `/v2/<name>`), the path itself otherwise.
    static func repositoryKey(_ path: String) -> String {
        for marker in ["/manifests/", "/blobs/", "/tags/list", "/referrers/"] {
            if let r = path.range(of: marker, options: .backwards) { return String(path[..<r.lowerBound]) }
        }
        return path
    }

    /// Runs `operation` on the usable endpoints in order until one succeeds.
    ///
    /// Endpoints cooling down are skipped. If every candidate is cooling down, the one whose cool-down ends
    /// first is tried anyway (a single-endpoint registry must not go dark for a blip), unless it is cooling
    /// for a 429: then the caller gets a 429 with the remaining wait as `Retry-After`, and no request is sent.
    ///
    /// Endpoints that served bad content for `object` go last. Each attempt gets a fair share of the time left
    /// until `deadline`; once it has passed, no further endpoint is tried.
    /// - Parameters:
    ///   - path: what the request asked for, for the several-paths rule (any stable text per path).
    ///   - object: the object fetched (digest, or `name@reference`), for remembering bad content; nil for none.
    func failover<T: Sendable>(trustedOnly: Bool, path: String, object: String?, deadline: Deadline,
                               _ operation: (UpstreamClient, Deadline) async throws(UpstreamError) -> T) async throws(UpstreamError) -> T {
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
        if let object {
            // A stable partition: endpoints that served this object bad go last, the order otherwise kept.
            order = order.filter { !$0.servedBad(object, now: now) } + order.filter { $0.servedBad(object, now: now) }
        }
        var errors: [UpstreamError] = []
        let operationName = UpstreamMetrics.operation(of: path)
        for (i, endpoint) in order.enumerated() {
            if deadline.hasPassed(), !errors.isEmpty { break }
            let own = endpoint.client.configuration.requestLimits.totalTimeout
            let started = ContinuousClock.now
            do {
                let result = try await operation(endpoint.client, deadline.share(attemptsLeft: order.count - i, own: deadline.instant == nil ? 0 : own))
                metrics.attempt(endpoint: endpoint.label, operation: operationName, duration: .now - started, failed: false)
                RequestTrace.record(endpoint: endpoint.label)
                endpoint.health.withLock { h in
                    h.coolUntil = nil
                    h.rateLimited = false
                    h.lastError = nil
                }
                return result
            } catch {
                metrics.attempt(endpoint: endpoint.label, operation: operationName, duration: .now - started, failed: true)
                var error = error
                var scope = FaultScope.classify(error, path: path, cooldown: configuration.cooldown)
                if scope == .path {
                    scope = await isEndpointFault(endpoint, path: path, deadline: deadline)
                        ? .endpoint(seconds: configuration.cooldown, rateLimited: false) : .request
                }
                switch scope {
                case .stop: throw error
                case .request, .path: break
                case .object:
                    if let object { markBad(endpoint, object: object, reason: "\(error)") }
                case .endpoint(let seconds, let rateLimited):
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
