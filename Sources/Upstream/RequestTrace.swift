import Synchronization

/// How the cache answered one client request, for the access log.
public enum CacheOutcome: String, Sendable {
    /// Served from a committed file (or a fresh cached tag).
    case hit
    /// Went upstream: this request started the fetch.
    case miss
    /// Served from the cache because no upstream could revalidate it (stale-if-error).
    case stale
    /// Attached to a blob fill another request had started (no second upstream fetch).
    case fillJoin = "fill-join"
}

/// What the layers below the HTTP front learned while answering one request: the cache outcome and the
/// upstream endpoint (`host:port`) that answered, if any. The front binds one to `RequestTrace.current` for
/// the request's task; `Mirror` and `RegistryClient` fill it in. Detached work (blob fills) does not see it.
public final class RequestTrace: Sendable {
    /// The trace of the request the current task serves, if any.
    @TaskLocal public static var current: RequestTrace?

    private struct State {
        var outcome: CacheOutcome?
        var endpoint: String?
    }
    private let state = Mutex(State())

    public init() {}

    /// The cache outcome (the first one recorded wins: a tag hit that was revalidated stays what the client got).
    public var outcome: CacheOutcome? { state.withLock { $0.outcome } }
    /// The upstream endpoint (`host:port`) that answered last for this request.
    public var endpoint: String? { state.withLock { $0.endpoint } }

    /// Records the outcome on the current request's trace, if any.
    public static func record(_ outcome: CacheOutcome) {
        current?.state.withLock { if $0.outcome == nil || outcome == .stale { $0.outcome = outcome } }
    }

    /// Records the endpoint that answered on the current request's trace, if any.
    public static func record(endpoint: String) {
        current?.state.withLock { $0.endpoint = endpoint }
    }
}
