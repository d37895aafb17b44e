/// How far the blame for a failed upstream attempt reaches (issue 7, "request faults are not endpoint faults").
///
/// Only endpoint-level evidence makes Cove skip an endpoint for every client; a failure caused by one request
/// only moves that request on to the next endpoint:
///
/// | evidence | scope |
/// |---|---|
/// | connect refused / timed out, response timeout, connection dropped (`transport`) | endpoint |
/// | 429 (Retry-After, else `cooldown`) | endpoint |
/// | 5xx on `/v2/` | endpoint |
/// | 5xx on one path, and `/v2/` still answers (a probe bounded by the connect timeout) | request |
/// | 5xx on one path, and the `/v2/` probe fails with 5xx or a transport error | endpoint |
/// | 5xx on one path, and the operation's deadline runs out before the probe can tell | request |
/// | 5xx on `distinctPathsForEndpointFault` distinct paths within `cooldown` | endpoint |
/// | content that fails verification (digest or size) | object: (endpoint, object) remembered for `cooldown` |
/// | 404, 401, 403, other 4xx, auth flow and redirect errors | request |
/// | the receiver refused the body (`aborted`) | none: no failover |
///
/// Why 5xx on one path is not enough: distribution answers 5xx for requests that are the client's mistake
/// (e.g. a layer digest asked for as a manifest, whose bytes are not a manifest), and a mirror may fail one
/// object while serving everything else.
enum FaultScope: Equatable {
    /// Cool the endpoint down for everyone, for `seconds`.
    case endpoint(seconds: Double, rateLimited: Bool)
    /// A 5xx on one path: endpoint-level only if `/v2/` fails too or several paths fail.
    case path
    /// This endpoint's copy of this object is bad: try other endpoints first for it.
    case object
    /// Move this request on to the next endpoint; nothing is remembered.
    case request
    /// Stop: not the upstream's fault, another endpoint would not help.
    case stop

    /// 5xx answers on this many distinct paths within the cool-down window cool an endpoint down even
    /// when `/v2/` answers (e.g. its storage backend is down). Three, not two: two wrong requests from one
    /// confused client must not take a healthy endpoint away from everyone.
    static let distinctPathsForEndpointFault = 3

    /// The scope of `error`, given the endpoint's cool-down (seconds) for endpoint-level faults.
    static func classify(_ error: UpstreamError, path: String, cooldown: Double) -> FaultScope {
        switch error {
        case .transport: return .endpoint(seconds: cooldown, rateLimited: false)
        case .status(let head, _):
            if head.status == 429 {
                let wait = RateLimitStatus.retryAfter(head["Retry-After"]).map { min($0, 3600) } ?? cooldown
                return .endpoint(seconds: wait, rateLimited: true)
            }
            if head.status >= 500 { return path == "/v2/" ? .endpoint(seconds: cooldown, rateLimited: false) : .path }
            return .request
        case .invalidContent: return .object
        // A refused address is the same answer next time and sent nothing, so a cool-down would protect nothing.
        case .auth, .redirect, .refusedAddress: return .request
        case .aborted: return .stop
        }
    }
}

/// What a `GET /v2/` probe said about an endpoint after a 5xx on one path.
enum VersionCheck: Equatable {
    /// It answered below 500 (200 and 401 both mean it is up): the 5xx was about that request.
    case answers
    /// 5xx or a transport error within the probe's own time: the endpoint is sick.
    case fails
    /// The operation's deadline ran out before the probe could tell: no evidence either way. A client's
    /// budget spent on earlier attempts (or a loaded machine) says nothing about this endpoint.
    case inconclusive
}

extension UpstreamClient {
    /// Probes `GET /v2/` (anonymously), bounded by the connect timeout and `deadline`. Used to tell a 5xx for one
    /// path from a sick endpoint.
    func versionCheck(deadline: Deadline) async -> VersionCheck {
        if deadline.hasPassed() { return .inconclusive }
        var limits = configuration.requestLimits
        limits.totalTimeout = max(0.1, limits.connectTimeout)
        limits.deadline = deadline
        do {
            let r = try await follow(method: "GET", url: configuration.url + Self.namespaced("/v2/", namespace), headers: [],
                                     authorization: nil, sink: nil, bufferLimit: 64 * 1024, limits: limits)
            return r.head.status < 500 ? .answers : .fails
        } catch {
            return deadline.hasPassed() ? .inconclusive : .fails
        }
    }
}
