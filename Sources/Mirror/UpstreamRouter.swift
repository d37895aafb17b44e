import Logging
import OCI
import Synchronization
import Upstream

/// Picks the upstream registry for a request: a configured registry by name, the default registry, or —
/// only when `allowAnyRegistry` is on — any registry host, reached at `https://<host>`.
///
/// Cove is not an open proxy by default: a registry that is not configured is refused with `DENIED`.
///
/// A single *unnamed* upstream (`--upstream URL`, or `upstream:` without `name`) is a catch-all for
/// containerd's `?ns=`: whatever registry `ns` names, the request goes to that one upstream. The OCI
/// distribution spec lets a registry ignore `ns` ("Pulling manifests": `ns` is a hint for mirrors), and an
/// operator who pointed Cove at one upstream meant every client to use it — e.g. containerd's Docker Hub
/// mirror setup sends `?ns=docker.io` to a Cove whose only upstream is an accelerator. `ns` is never dialed.
public final class UpstreamRouter: Sendable {
    public let defaultRegistry: RegistryClient
    public let allowAnyRegistry: Bool
    /// True for a single unnamed upstream: `?ns=` is ignored and every request without a path prefix goes to
    /// `defaultRegistry`.
    public let ignoresNamespace: Bool
    let configured: [String: RegistryClient]
    let adHoc = Mutex<[String: RegistryClient]>([:])
    let adHocTemplate: UpstreamConfiguration
    let logger: Logger
    let metrics: UpstreamMetrics

    /// - Parameters:
    ///   - registries: the configured registries; `defaultName` must be one of them.
    ///   - adHocTemplate: limits for registries created on demand under `allowAnyRegistry` (its URL is ignored).
    ///   - ignoresNamespace: serve every `?ns=` from the default registry (a single unnamed upstream).
    ///   - metrics: where every registry records its upstream metrics (default: the global `MetricsSystem`).
    public init(registries: [RegistryConfiguration], defaultName: String, allowAnyRegistry: Bool, ignoresNamespace: Bool = false,
                adHocTemplate: UpstreamConfiguration = UpstreamConfiguration(url: "https://localhost"), logger: Logger,
                metrics: UpstreamMetrics = UpstreamMetrics()) {
        var map: [String: RegistryClient] = [:]
        for r in registries { map[r.name] = RegistryClient(configuration: r, logger: logger, metrics: metrics) }
        configured = map
        defaultRegistry = map[defaultName] ?? RegistryClient(configuration: registries[0], logger: logger, metrics: metrics)
        self.metrics = metrics
        self.allowAnyRegistry = allowAnyRegistry
        self.ignoresNamespace = ignoresNamespace
        self.adHocTemplate = adHocTemplate
        self.logger = logger
    }

    /// Every configured registry, sorted by name.
    public var registries: [RegistryClient] { configured.values.sorted { $0.name < $1.name } }

    /// The registry for a request: its path prefix (`/v2/<registry>/<name>/...`) if it has one, else
    /// containerd's `?ns=` (ignored by a single unnamed upstream), else the default registry.
    /// - Throws: as `registry(named:)`.
    public func registry(pathPrefix: String?, namespace: String?) throws(DistributionError) -> RegistryClient {
        if let pathPrefix { return try registry(named: pathPrefix) }
        return try registry(named: ignoresNamespace ? nil : namespace)
    }

    /// The registry for `name` (nil: the default registry). Docker Hub's aliases all mean `docker.io`.
    /// - Throws: `DENIED` (403) for a registry that is not configured while `allowAnyRegistry` is off, or
    ///   that is named by a non-public IP literal or `localhost` (SSRF rules), `NAME_INVALID` for a malformed host.
    public func registry(named name: String?) throws(DistributionError) -> RegistryClient {
        guard let name = name.map(DockerHub.canonicalRegistryName), !name.isEmpty else { return defaultRegistry }
        if let r = configured[name] { return r }
        guard Self.looksLikeHost(name) else { throw .nameInvalid("invalid registry host \(RepositoryName.quoted(name))") }
        guard allowAnyRegistry else {
            logger.notice("refused request for a registry that is not configured", metadata: ["registry": "\(name)"])
            throw DistributionError(.denied, "registry \(name) is not configured on this mirror")
        }
        try refuseNonPublicAdHoc(name)
        return adHoc.withLock { map in
            if let r = map[name] { return r }
            var endpoint = adHocTemplate
            endpoint.url = "https://" + name
            endpoint.addressPolicy.scope = .publicOnly
            let r = RegistryClient(configuration: RegistryConfiguration(name: name, endpoints: [endpoint]), logger: logger, metrics: metrics)
            map[name] = r
            return r
        }
    }

    /// True when a first path component names a registry rather than a namespace.
    ///
    /// A configured registry name always does. Any other host-like component (`a.b`, `host:port`,
    /// `localhost`) does too — and is then refused unless `allowAnyRegistry` — when the default registry is
    /// Docker Hub, whose namespaces never contain `.` or `:`. With another default registry such a component
    /// is an ordinary namespace (`my.team/app` is a valid name there).
    public func isRegistryPrefix(_ component: Substring) -> Bool {
        let name = component.lowercased()
        if configured[name] != nil || DockerHub.isAlias(name) && configured[DockerHub.name] != nil { return true }
        return (allowAnyRegistry || defaultRegistry.name == DockerHub.name) && Self.looksLikeHost(name)
    }

    /// `host[:port]` with DNS-ish labels, containing a `.` or `:` or being `localhost`.
    public static func looksLikeHost(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 253 else { return false }
        var host = Substring(s)
        if let colon = s.lastIndex(of: ":") {
            guard let port = Int(s[s.index(after: colon)...]), (1...65535).contains(port) else { return false }
            host = s[..<colon]
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" }),
              host.allSatisfy(\.isASCII), !host.hasPrefix("."), !host.hasSuffix("."), !host.contains("..") else { return false }
        return host.contains(".") || s.contains(":") || host == "localhost"
    }
}
