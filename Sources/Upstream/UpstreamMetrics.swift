import CoreMetrics
import Foundation
import Metrics

/// Upstream metrics per endpoint (label `endpoint` = `host:port`, a handful per deployment) recorded through
/// swift-metrics; the factory is passed in so tests can read their own registry (the global
/// `MetricsSystem` can be bootstrapped once per process only).
///
/// - `cove_upstream_request_duration_seconds{endpoint,operation}`: histogram of one endpoint attempt (token,
///   redirects and, for blobs, the whole transfer included).
/// - `cove_upstream_errors_total{endpoint,operation}`: attempts that failed (any error, 404 included).
/// - `cove_upstream_cooldowns_total{endpoint}`: times the endpoint was cooled down for everyone.
public struct UpstreamMetrics: Sendable {
    public let factory: any MetricsFactory

    public init(factory: any MetricsFactory = MetricsSystem.factory) { self.factory = factory }

    /// The histogram's metric name, and buckets that reach past small requests to whole blob transfers
    /// (5 ms … 10 min); a backend that supports per-metric buckets (Prometheus) should use them.
    public static let durationMetric = "cove_upstream_request_duration_seconds"
    public static let durationBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        .seconds(120), .seconds(300), .seconds(600),
    ]

    /// Records one attempt on `endpoint`.
    func attempt(endpoint: String, operation: String, duration: Duration, failed: Bool) {
        let dimensions = [("endpoint", endpoint), ("operation", operation)]
        let (seconds, attoseconds) = duration.components
        CoreMetrics.Timer(label: Self.durationMetric, dimensions: dimensions, factory: factory)
            .recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        if failed { Counter(label: "cove_upstream_errors_total", dimensions: dimensions, factory: factory).increment() }
    }

    func cooledDown(endpoint: String) {
        Counter(label: "cove_upstream_cooldowns_total", dimensions: [("endpoint", endpoint)], factory: factory).increment()
    }

    /// The operation an API path is for: `manifest`, `blob`, `tags`, `referrers`, or `base`.
    static func operation(of path: String) -> String {
        if path.contains("/manifests/") { return "manifest" }
        if path.contains("/blobs/") { return "blob" }
        if path.hasSuffix("/tags/list") { return "tags" }
        if path.contains("/referrers/") { return "referrers" }
        return "base"
    }
}

extension UpstreamConfiguration {
    /// `host:port` of the endpoint URL (the default port filled in), the label its metrics carry.
    public var endpointLabel: String {
        guard let parts = URLParts(url) else { return url }
        let port = parts.port ?? (parts.scheme == "http" ? 80 : 443)
        return "\(parts.host):\(port)"
    }
}
