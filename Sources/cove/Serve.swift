import Access
import ArgumentParser
import CacheAdmin
import CoveConfig
import Foundation
import Hummingbird
import Logging
import Metrics
import Mirror
import MirrorServer
import Prometheus
import ServiceLifecycle
import Upstream
#if canImport(Glibc)
import Glibc
#endif

/// `cove serve`: run the mirror until SIGTERM or SIGINT, then shut down gracefully.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the registry API from the cache, filling it from the upstream.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        #if canImport(Glibc)
        // Blob buffers are 1 MiB and are freed on other threads than they were allocated on; with glibc's
        // dynamic mmap threshold they end up in per-thread arenas that never shrink (bench/RESULTS.md:
        // 800+ MiB RSS for 32 clients). A fixed threshold keeps them mmap-backed and returned on free.
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") {  // RTLD_DEFAULT
            typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
            _ = unsafeBitCast(symbol, to: Mallopt.self)(-3 /* M_MMAP_THRESHOLD */, 256 * 1024)
        }
        #endif
        let config = try options.load()
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        let json = config.logFormat == "json"
        LoggingSystem.bootstrap { label in
            var handler = LogLineHandler(label: label, format: json ? .json : .text)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "cove")
        // TLS and access control (README "TLS and access control"), checked before the storage is opened;
        // both files are re-read on SIGHUP.
        let certificates = try config.tls.map { files in try ListenerCertificates(files: files) }
        let (access, verifier) = try ClientAccessSetup.load(config, logger: Logger(label: "cove.access"))
        let reload = ReloadOnHangup(actions: Self.reloadActions(config, certificates, verifier), logger: logger)
        // One Prometheus registry for the process: swift-metrics records into it, `/metrics` renders it.
        let prometheus = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: prometheus)
        factory.durationHistogramBuckets[UpstreamMetrics.durationMetric] = UpstreamMetrics.durationBuckets
        MetricsSystem.bootstrap(factory)
        let metrics = MirrorMetrics(factory: MetricsSystem.factory)
        var template = UpstreamConfiguration(url: "https://localhost")
        template.requestLimits = config.network.requestLimits
        template.blobLimits = config.network.blobLimits
        let router = UpstreamRouter(registries: config.effectiveRegistries, defaultName: config.defaultRegistry,
                                    allowAnyRegistry: config.allowAnyRegistry, ignoresNamespace: config.ignoresNamespace, adHocTemplate: template, logger: Logger(label: "cove.upstream"),
                                    metrics: metrics.upstream)
        let storage = URL(fileURLWithPath: config.storage)
        try Self.checkStorage(storage)
        let openedAt = Date()
        let mirror = try Mirror(storage: storage, router: router, configuration: config.cache, logger: Logger(label: "cove.mirror"), metrics: metrics)
        raiseFileLimit(logger: logger)
        let readiness = Readiness()
        let app = Application(
            responder: RegistryResponder(mirror: mirror, logger: Logger(label: "cove.http"), access: access, prometheus: prometheus, readiness: readiness),
            // Idle connections (e.g. a client that stops half way through its headers) are closed after 60 s;
            // a response being written is never cut by this.
            server: .http1(configuration: .init(idleTimeout: .seconds(60)), certificates: certificates),
            configuration: .init(address: .hostname(config.listen.host, port: config.listen.port), serverName: nil),
            onServerRunning: { channel in
                logger.notice("cove listening", metadata: [
                    "address": "\(channel.localAddress.map { "\($0)" } ?? "\(config.listen)")",
                    "default_registry": "\(config.defaultRegistry)",
                    "registries": "\(config.registries.map(\.name).joined(separator: ","))",
                    "offline": "\(config.cache.offline)", "storage": "\(storage.path)",
                    "tls": "\(certificates != nil)", "auth": "\(config.auth.map { "htpasswd, anonymous \($0.anonymous.rawValue)" } ?? "none")",
                ])
            },
            logger: Logger(label: "cove.server")
        )
        // Services stop in reverse order: /readyz turns 503 at once, the server stops accepting and finishes
        // its responses, then fills still in flight get the rest of `shutdown_timeout` to verify and commit;
        // past `shutdown_timeout` in all, what is left is cancelled.
        // Start-up reconciliation runs beside serving; the admin socket serves `cove verify/stats/ls`.
        let reconciliation = StartupReconciliation(store: mirror.store, index: mirror.index, startedAt: openedAt, logger: Logger(label: "cove.reconcile"))
        let admin = AdminSocketService(path: AdminChannel.socketPath(storage: storage),
                                       cache: CacheAdmin(mirror: mirror, reconciliation: reconciliation, logger: Logger(label: "cove.admin")),
                                       logger: Logger(label: "cove.admin"))
        // TLS connections cut at the deadline still wait up to `closeWait` for their clients' close_notify: that
        // comes out of the budget, so Cove is gone within `shutdown_timeout` either way.
        let drainBudget = max(0, config.shutdownTimeout - (certificates == nil ? 0 : ListenerCertificates.closeWait))
        var groupConfiguration = ServiceGroupConfiguration(
            services: [CacheMaintenance(mirror: mirror), FillDrain(mirror: mirror, within: drainBudget, logger: logger), app,
                       ReconciliationService(reconciliation: reconciliation), admin, reload, ShutdownAnnouncer(readiness: readiness, logger: logger)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        groupConfiguration.maximumGracefulShutdownDuration = .milliseconds(Int64(drainBudget * 1000))
        let group = ServiceGroup(configuration: groupConfiguration)
        try await group.run()
        logger.notice("cove stopped")
    }

    /// What SIGHUP re-reads: the TLS pair and the htpasswd file, each keeping its old contents on failure.
    static func reloadActions(_ config: CoveConfiguration, _ certificates: ListenerCertificates?, _ verifier: CredentialVerifier?) -> [@Sendable () -> Void] {
        var actions: [@Sendable () -> Void] = []
        let logger = Logger(label: "cove.reload")
        if let certificates { actions.append { certificates.reload(logger: logger) } }
        if let verifier, let path = config.auth?.htpasswd {
            actions.append { ClientAccessSetup.reload(verifier, path: path, logger: logger) }
        }
        return actions
    }

    /// A storage path must be new, empty, or a Cove storage (it has `index.sqlite`): Cove clears `tmp/` at
    /// start-up and owns everything below, so a mistyped path must not adopt an unrelated directory.
    /// `lost+found` alone counts as empty: a fresh file system mounted at the storage path (a Kubernetes
    /// volume, a dedicated disk) has one, and Cove never touches it.
    /// - Throws: `ValidationError` naming the path.
    static func checkStorage(_ storage: URL) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: storage.path, isDirectory: &isDir) else { return }
        guard isDir.boolValue else { throw ValidationError("storage \(storage.path) is a file, not a directory") }
        guard !fm.fileExists(atPath: storage.appendingPathComponent("index.sqlite").path) else { return }
        let entries = ((try? fm.contentsOfDirectory(atPath: storage.path)) ?? []).filter { $0 != "lost+found" }
        guard entries.isEmpty else {
            throw ValidationError("storage \(storage.path) is not empty and holds no Cove cache (no index.sqlite); use an empty or new directory")
        }
    }

    /// Raises the open-file soft limit to the hard limit: every client connection and every open blob is a
    /// descriptor, and distributions default the soft limit to 1024.
    private func raiseFileLimit(logger: Logger) {
        #if canImport(Glibc)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 {
            logger.warning("could not raise the open-file limit", metadata: ["limit": "\(limit.rlim_max)"])
        }
        #endif
    }
}

/// Batched access times and the periodic `min_free` / `max_size` check; stops last, after a final flush.
struct CacheMaintenance: Service {
    let mirror: Mirror

    func run() async throws {
        await cancelWhenGracefulShutdown { await mirror.maintainCache() }
    }
}

/// On shutdown, waits (up to `shutdown_timeout`; the group's own limit cancels it sooner) for blob fills in
/// flight so verified downloads are kept.
struct FillDrain: Service {
    let mirror: Mirror
    let within: Double
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        let left = await mirror.drainFills(within: within)
        if left > 0 { logger.warning("shutting down with blob fills in flight; they will be fetched again", metadata: ["fills": "\(left)"]) }
    }
}

/// Stops last-listed, so it is told first: on SIGTERM/SIGINT it flips `/readyz` to 503 before the server
/// stops accepting, and logs that shutdown began.
struct ShutdownAnnouncer: Service {
    let readiness: Readiness
    let logger: Logger

    func run() async throws {
        try? await gracefulShutdown()
        readiness.beginShutdown()
        logger.notice("shutting down: no new connections; responses and blob fills in flight get to finish")
    }
}
