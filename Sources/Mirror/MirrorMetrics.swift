import CoreMetrics
import Foundation
import Metrics
import Synchronization
import Upstream

/// The cache's metrics, recorded through swift-metrics into the factory given at start-up (`cove serve`
/// bootstraps Prometheus; tests pass their own registry, because `MetricsSystem.bootstrap` works once per
/// process). Names carry the `cove_` prefix and their unit; the table is in README ("Operating Cove").
///
/// Fixed-label counters are made once here, so recording one is an atomic add. Gauges that describe state
/// (cache size, fills in flight, endpoint health) are set when scraped (`Mirror.updateGauges()`).
/// Also keeps what the status page shows that Prometheus cannot answer cheaply: hits and misses since start
/// and manifest pulls per repository.
public final class MirrorMetrics: Sendable {
    public let factory: any MetricsFactory
    public let upstream: UpstreamMetrics

    /// `cove_cache_requests_total{kind,outcome}`: manifest and blob requests by cache outcome.
    let manifestHit, manifestMiss, manifestStale, blobHit, blobMiss, blobJoin: Counter
    /// `cove_cache_served_bytes_total`: body bytes sent to clients from committed cache files.
    public let servedFromCache: Counter
    /// `cove_cache_sendfile_bytes_total`: blob body bytes sent with `sendfile(2)`, without a userspace copy: from
    /// committed files, and from fills in flight as far as their temp file holds them (plaintext listeners; over
    /// TLS every byte is read and encrypted).
    public let servedWithSendfile: Counter
    /// `cove_upstream_received_bytes_total{kind}`: bytes received from upstreams for manifests and blob fills.
    let upstreamManifestBytes, upstreamBlobBytes: Counter
    /// `cove_fills_total{outcome}`: blob fills that ended verified, failed their digest or size, or were
    /// aborted; `resumed` counts resumptions of interrupted transfers.
    let fillVerified, fillDigestMismatch, fillAborted, fillResumed: Counter
    /// `cove_evicted_objects_total`, `cove_evicted_bytes_total`.
    let evictedObjects, evictedBytes: Counter

    private let hits = Atomic<Int>(0), misses = Atomic<Int>(0)
    private let pulls = Mutex<[String: Int]>([:])
    /// Repositories counted at most (a client sending random names must not grow memory without bound).
    static let maxRepositories = 10_000

    /// - Parameter factory: where metrics go (default: the global `MetricsSystem`).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
        self.upstream = UpstreamMetrics(factory: factory)
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: label, dimensions: dimensions, factory: factory)
        }
        let requests = "cove_cache_requests_total"
        manifestHit = counter(requests, [("kind", "manifest"), ("outcome", "hit")])
        manifestMiss = counter(requests, [("kind", "manifest"), ("outcome", "miss")])
        manifestStale = counter(requests, [("kind", "manifest"), ("outcome", "stale")])
        blobHit = counter(requests, [("kind", "blob"), ("outcome", "hit")])
        blobMiss = counter(requests, [("kind", "blob"), ("outcome", "miss")])
        blobJoin = counter(requests, [("kind", "blob"), ("outcome", "fill-join")])
        servedFromCache = counter("cove_cache_served_bytes_total")
        servedWithSendfile = counter("cove_cache_sendfile_bytes_total")
        upstreamManifestBytes = counter("cove_upstream_received_bytes_total", [("kind", "manifest")])
        upstreamBlobBytes = counter("cove_upstream_received_bytes_total", [("kind", "blob")])
        fillVerified = counter("cove_fills_total", [("outcome", "verified")])
        fillDigestMismatch = counter("cove_fills_total", [("outcome", "digest_mismatch")])
        fillAborted = counter("cove_fills_total", [("outcome", "aborted")])
        fillResumed = counter("cove_fills_total", [("outcome", "resumed")])
        evictedObjects = counter("cove_evicted_objects_total")
        evictedBytes = counter("cove_evicted_bytes_total")
    }

    /// Counts a manifest request by outcome, and records it on the request's trace (access log).
    func manifest(_ outcome: CacheOutcome) {
        switch outcome {
        case .hit: manifestHit.increment(); hits.add(1, ordering: .relaxed)
        case .miss, .fillJoin: manifestMiss.increment(); misses.add(1, ordering: .relaxed)
        case .stale: manifestStale.increment(); hits.add(1, ordering: .relaxed)
        }
        RequestTrace.record(outcome)
    }

    /// Counts a blob request by outcome, and records it on the request's trace (access log).
    func blob(_ outcome: CacheOutcome) {
        switch outcome {
        case .hit, .stale: blobHit.increment(); hits.add(1, ordering: .relaxed)
        case .miss: blobMiss.increment(); misses.add(1, ordering: .relaxed)
        case .fillJoin: blobJoin.increment(); misses.add(1, ordering: .relaxed)
        }
        RequestTrace.record(outcome)
    }

    /// Counts a manifest pull of `repository` (`registry/name`) for the status page's top list.
    func pulled(_ repository: String) {
        pulls.withLock { p in
            if p[repository] != nil || p.count < Self.maxRepositories { p[repository, default: 0] += 1 }
        }
    }

    /// Manifest and blob requests answered from the cache (stale included) and sent upstream, since start.
    public var requestCounts: (hits: Int, misses: Int) { (hits.load(ordering: .relaxed), misses.load(ordering: .relaxed)) }

    /// The `limit` repositories with the most manifest pulls since start, most first (ties by name).
    public func topRepositories(_ limit: Int = 10) -> [(repository: String, pulls: Int)] {
        pulls.withLock { p in
            p.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(limit).map { ($0.key, $0.value) }
        }
    }

    private struct RequestKey: Hashable {
        var route: String
        var method: String
        var status: Int
    }
    private let requestCounters = Mutex<[RequestKey: Counter]>([:])

    /// `cove_http_requests_total{route,method,status}`, made once per label set and kept (a per-request lookup
    /// instead of a new `Counter` and a registry lookup). The caller keeps the label values few.
    public func httpRequests(route: String, method: String, status: Int) -> Counter {
        let key = RequestKey(route: route, method: method, status: status)
        if let counter = requestCounters.withLock({ $0[key] }) { return counter }
        let counter = Counter(label: "cove_http_requests_total", dimensions: [("route", route), ("method", method), ("status", String(status))],
                              factory: factory)
        // (`d[key, default:]` would only read: the counter must be stored, or every request makes a new one.)
        return requestCounters.withLock { d in
            if let existing = d[key] { return existing }
            d[key] = counter
            return counter
        }
    }

    func gauge(_ label: String, _ dimensions: [(String, String)] = []) -> Gauge {
        Gauge(label: label, dimensions: dimensions, factory: factory)
    }
}
