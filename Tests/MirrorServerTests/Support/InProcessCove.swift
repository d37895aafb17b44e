import Access
import BlobStore
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import Mirror
import MirrorServer
import Prometheus
import Synchronization
import Upstream

/// Cove's real stack (Mirror + RegistryResponder on Hummingbird) in the test process, on a temp storage dir.
final class InProcessCove: Sendable {
    /// Dropped by `stop(keepStorage: true)`, so the storage (and its lock) is free for another Cove.
    private let mirrorBox: Mutex<Mirror?>
    private let responder: ResponderBox
    let server: RunningServer
    let storage: URL
    /// This Cove's own metrics registry (no global `MetricsSystem` bootstrap in tests), rendered at `/metrics`.
    let prometheus = PrometheusCollectorRegistry()
    /// `/readyz`'s shutdown flag.
    let readiness = Readiness()

    /// The mirror; not available after `stop(keepStorage: true)`.
    var mirror: Mirror { mirrorBox.withLock { $0! } }

    var url: String { "http://127.0.0.1:\(server.port)" }

    /// A Cove with one registry whose single endpoint is `upstream`.
    convenience init(upstream: String, credentials: Credentials? = nil, configuration: MirrorConfiguration = MirrorConfiguration(),
                     sendfile: Bool = true) async throws {
        try await self.init(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [Self.endpoint(upstream, credentials: credentials)])],
                            configuration: configuration, sendfile: sendfile)
    }

    /// A Cove with several registries; the first is the default unless `defaultName` says otherwise.
    /// - Parameters:
    ///   - storage: an existing storage root to reuse (e.g. one a previous Cove filled); default a fresh temp dir.
    ///   - adHocTemplate: limits for registries created under `allowAnyRegistry`.
    ///   - logs: when given, every log record (debug and up) of Cove's own logger goes there too.
    ///   - ignoresNamespace: a single unnamed upstream that serves every `?ns=`.
    ///   - access: client authentication and repository policies (default: none, as without `auth:`).
    ///   - sendfile: serve cached blobs with sendfile, as `cove serve` does without TLS (false: the `pread` path
    ///     TLS listeners use).
    init(registries: [RegistryConfiguration], allowAnyRegistry: Bool = false, ignoresNamespace: Bool = false, defaultName: String? = nil,
         configuration: MirrorConfiguration = MirrorConfiguration(), storage: URL? = nil,
         adHocTemplate: UpstreamConfiguration? = nil, logs: LogCapture? = nil, access: ClientAccess = .open, sendfile: Bool = true) async throws {
        self.storage = storage ?? FileManager.default.temporaryDirectory.appendingPathComponent("cove-test-\(UUID().uuidString)")
        var logger: Logger
        if let logs {
            logger = Logger(label: "cove-test") { label in logs.handler(label: label) }
            logger.logLevel = .debug
        } else {
            logger = Logger(label: "cove-test")
            logger.logLevel = ProcessInfo.processInfo.environment["COVE_TEST_LOG"] == nil ? .critical : .debug
        }
        var factory = PrometheusMetricsFactory(registry: prometheus)
        factory.durationHistogramBuckets[UpstreamMetrics.durationMetric] = UpstreamMetrics.durationBuckets
        let metrics = MirrorMetrics(factory: factory)
        let router = UpstreamRouter(registries: registries, defaultName: defaultName ?? registries[0].name, allowAnyRegistry: allowAnyRegistry,
                                    ignoresNamespace: ignoresNamespace, adHocTemplate: adHocTemplate ?? Self.endpoint("https://localhost"), logger: logger,
                                    metrics: metrics.upstream)
        let mirror = try await Self.openMirror(storage: self.storage, router: router, configuration: configuration, logger: logger, metrics: metrics)
        mirrorBox = Mutex(mirror)
        responder = ResponderBox(RegistryResponder(mirror: mirror, logger: logger, access: access, prometheus: prometheus, readiness: readiness))
        server = try await RunningServer(responder, label: "cove", server: sendfile ? .http1Sendfile() : .http1())
    }

    /// Opens the mirror; a storage the previous `InProcessCove` still holds (`stop(keepStorage: true)` lets go of
    /// it only when the requests in flight, and the access log lines written after their bodies, have ended) is
    /// retried for up to 10 s, as a restarted server would wait for the old process.
    private static func openMirror(storage: URL, router: UpstreamRouter, configuration: MirrorConfiguration, logger: Logger,
                                   metrics: MirrorMetrics) async throws -> Mirror {
        for attempt in 0... {
            do {
                return try Mirror(storage: storage, router: router, configuration: configuration, logger: logger, metrics: metrics)
            } catch let error as BlobStoreError {
                guard case .inUse = error, attempt < 100 else { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        fatalError("unreachable")
    }

    /// An endpoint with test timeouts (seconds). The defaults are generous on purpose: ~60 suites run at once on
    /// a 2-core CI machine, where an in-process fixture can take several seconds to answer a healthy request (a
    /// 2 s connect / 5 s request limit failed healthy pulls there). Tests about a timeout pass their own short
    /// limits; `lowSpeedTime` bounds blob transfers that stall.
    static func endpoint(_ url: String, credentials: Credentials? = nil, resolveTags: Bool = true,
                         connectTimeout: Double = 10, requestTimeout: Double = 30, lowSpeedTime: Double = 30) -> UpstreamConfiguration {
        UpstreamConfiguration(url: url, credentials: credentials,
                              requestLimits: TransferLimits(connectTimeout: connectTimeout, lowSpeedLimit: 1, lowSpeedTime: lowSpeedTime,
                                                            totalTimeout: requestTimeout),
                              blobLimits: TransferLimits(connectTimeout: connectTimeout, lowSpeedLimit: 1, lowSpeedTime: lowSpeedTime),
                              resolveTags: resolveTags)
    }

    /// Stops serving; the storage is deleted unless `keepStorage`. With `keepStorage` the mirror is released
    /// too (once requests in flight end), so another Cove can open the same storage.
    func stop(keepStorage: Bool = false) {
        server.stop()
        if keepStorage {
            responder.inner.withLock { $0 = nil }
            mirrorBox.withLock { $0 = nil }
        } else {
            try? FileManager.default.removeItem(at: storage)
        }
    }

    /// The upstream client of a configured registry (for its endpoints' health and rate-limit status).
    func registry(_ name: String) -> RegistryClient? { try? mirror.router.registry(named: name) }

    /// True when the blob is committed on disk and in the index.
    func isCached(_ digest: String) -> Bool {
        let hex = digest.split(separator: ":")[1]
        let path = storage.path + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
        return FileManager.default.fileExists(atPath: path) && ((try? mirror.index.blob(digest)) ?? nil) != nil
    }

    /// Files left in tmp/ (fills in flight or leaked).
    func tmpFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: storage.path + "/tmp")) ?? []
    }
}

/// Holds the responder so that stopping can let go of the mirror while the server task winds down.
final class ResponderBox: HTTPResponder, Sendable {
    typealias Context = CoveRequestContext
    let inner: Mutex<RegistryResponder?>
    init(_ responder: RegistryResponder) { inner = Mutex(responder) }

    func respond(to request: Request, context: Context) async throws -> Response {
        guard let responder = inner.withLock({ $0 }) else { return Response(status: .serviceUnavailable) }
        return try await responder.respond(to: request, context: context)
    }
}

/// A finished curl run: exit code (18 = transfer closed with data outstanding), status, headers, body.
struct CurlResult: Sendable {
    var exitCode: Int32
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
}

/// `count` GETs of `url` at once, each by its own `curl` process (so each is its own client); results in
/// completion order. Bounded by `maxTime` seconds per GET.
func concurrentGets(_ url: String, count: Int, maxTime: Double = 60) async throws -> [CurlResult] {
    try await withThrowingTaskGroup(of: CurlResult.self) { group in
        for _ in 0..<count { group.addTask { try await curl(url, maxTime: maxTime) } }
        return try await group.reduce(into: []) { $0.append($1) }
    }
}

/// Runs the `curl` CLI (a real HTTP client) and collects what it received. Bounded by `maxTime` seconds.
func curl(_ url: String, method: String = "GET", headers: [String] = [], maxTime: Double = 60, limitRate: String? = nil) async throws -> CurlResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let bodyPath = dir.appendingPathComponent("body").path, headPath = dir.appendingPathComponent("head").path
    var args = ["-s", "-o", bodyPath, "-D", headPath, "--max-time", String(maxTime)]
    if let limitRate { args += ["--limit-rate", limitRate] }
    if method == "HEAD" { args.append("-I") } else if method != "GET" { args += ["-X", method] }
    for h in headers { args += ["-H", h] }
    args.append(url)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    p.arguments = args
    let code: Int32 = try await withCheckedThrowingContinuation { c in
        p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
        do { try p.run() } catch { c.resume(throwing: error) }
    }
    let head = (try? String(contentsOfFile: headPath, encoding: .utf8)) ?? ""
    var status = 0
    var fields: [String: String] = [:]
    for line in head.split(whereSeparator: \.isNewline) {
        if line.hasPrefix("HTTP/") { status = Int(line.split(separator: " ")[1]) ?? 0; fields = [:]; continue }
        if let colon = line.firstIndex(of: ":") {
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    let body = method == "HEAD" ? [] : ((try? Data(contentsOf: URL(fileURLWithPath: bodyPath))).map { [UInt8]($0) } ?? [])
    return CurlResult(exitCode: code, status: status, headers: fields, body: body)
}

/// Polls `condition` every 50 ms for at most `seconds` (generous by default: waiting longer costs only a failing
/// test time, and a loaded CI machine can take seconds to write a log line or finish a fill).
func eventually(_ seconds: Double = 20, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return condition()
}
