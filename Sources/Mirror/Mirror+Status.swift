import BlobStore
import CoreMetrics
import Foundation
import Metrics
import OCI
import Upstream

/// What the status page shows: one consistent-enough snapshot of the cache, its upstreams and fills.
public struct MirrorStatus: Sendable {
    /// One upstream endpoint's health.
    public struct EndpointStatus: Sendable {
        /// `host:port`.
        public var label: String
        public var url: String
        /// Seconds left in a cool-down, nil when usable.
        public var coolingFor: Double?
        /// The failure that cooled it down last (cleared by the next success).
        public var lastError: String?
        /// The rate limit the endpoint last reported, if it sends one.
        public var rateLimit: RateLimitStatus?

        public init(label: String, url: String, coolingFor: Double?, lastError: String?, rateLimit: RateLimitStatus?) {
            (self.label, self.url, self.coolingFor, self.lastError, self.rateLimit) = (label, url, coolingFor, lastError, rateLimit)
        }
    }

    public struct RegistryStatus: Sendable {
        public var name: String
        public var endpoints: [EndpointStatus]

        public init(name: String, endpoints: [EndpointStatus]) { (self.name, self.endpoints) = (name, endpoints) }
    }

    /// A blob fill in flight.
    public struct FillStatus: Sendable {
        public var digest: String
        public var bytes: Int64
        /// The announced size, nil until the upstream sent one.
        public var size: Int64?

        public init(digest: String, bytes: Int64, size: Int64?) { (self.digest, self.bytes, self.size) = (digest, bytes, size) }
    }

    /// Bytes cached (blobs and manifests) and `max_size` (nil: no limit).
    public var cacheBytes: Int64
    public var maxSize: Int64?
    /// Free bytes on the storage file system and the `min_free` floor in bytes (nil: unknown).
    public var freeBytes: Int64?
    public var minFreeBytes: Int64?
    /// Manifest and blob requests answered from the cache and sent upstream since start.
    public var hits: Int
    public var misses: Int
    public var registries: [RegistryStatus]
    public var fills: [FillStatus]
    /// Most pulled repositories (`registry/name`, manifest requests) since start.
    public var topRepositories: [(repository: String, pulls: Int)]
    public var offline: Bool

    public init(cacheBytes: Int64, maxSize: Int64?, freeBytes: Int64?, minFreeBytes: Int64?, hits: Int, misses: Int,
                registries: [RegistryStatus], fills: [FillStatus], topRepositories: [(repository: String, pulls: Int)], offline: Bool) {
        self.cacheBytes = cacheBytes
        self.maxSize = maxSize
        self.freeBytes = freeBytes
        self.minFreeBytes = minFreeBytes
        self.hits = hits
        self.misses = misses
        self.registries = registries
        self.fills = fills
        self.topRepositories = topRepositories
        self.offline = offline
    }
}

extension Mirror {
    /// A snapshot for the status page.
    public func status() async -> MirrorStatus {
        let space = budget.space()
        let (hits, misses) = metrics.requestCounts
        let registries = router.registries.map { r in
            MirrorStatus.RegistryStatus(name: r.name, endpoints: r.endpoints.map { e in
                MirrorStatus.EndpointStatus(label: e.label, url: e.client.configuration.url, coolingFor: e.coolingFor(),
                                            lastError: e.lastError, rateLimit: e.client.rateLimit)
            })
        }
        let fills = await fills.progress().map { MirrorStatus.FillStatus(digest: $0.digest.description, bytes: $0.written, size: $0.size) }
        return MirrorStatus(cacheBytes: budget.usedBytes(), maxSize: configuration.maxSize, freeBytes: space?.available,
                            minFreeBytes: space.map { configuration.minFree.bytes(ofTotal: $0.total) },
                            hits: hits, misses: misses, registries: registries, fills: fills,
                            topRepositories: metrics.topRepositories(10), offline: configuration.offline)
    }

    /// Sets the gauges that describe state, just before a scrape renders them:
    /// `cove_cache_size_bytes`, `cove_cache_limit_bytes` (when `max_size` is set), `cove_storage_free_bytes`,
    /// `cove_fills_in_flight`, and per endpoint `cove_upstream_endpoint_cooled` (1 while cooled down) and
    /// `cove_upstream_ratelimit_remaining` (when the endpoint reports one).
    public func updateGauges() async {
        metrics.gauge("cove_cache_size_bytes").record(budget.usedBytes())
        if let max = configuration.maxSize { metrics.gauge("cove_cache_limit_bytes").record(max) }
        if let space = budget.space() {
            metrics.gauge("cove_storage_free_bytes").record(space.available)
            metrics.gauge("cove_storage_min_free_bytes").record(configuration.minFree.bytes(ofTotal: space.total))
        }
        metrics.gauge("cove_fills_in_flight").record(await fills.activeCount)
        for registry in router.registries {
            for e in registry.endpoints {
                let labels = [("endpoint", e.label)]
                metrics.gauge("cove_upstream_endpoint_cooled", labels).record(e.coolingFor() == nil ? 0 : 1)
                if let remaining = e.client.rateLimit?.remaining {
                    metrics.gauge("cove_upstream_ratelimit_remaining", labels).record(remaining)
                }
            }
        }
    }
}
