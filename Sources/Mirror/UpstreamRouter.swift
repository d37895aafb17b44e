import Logging
import OCI
import Synchronization
import Upstream

/// Picks the upstream registry for a request: a configured registry by name, the default registry, or —
/// only when `allowAnyRegistry` is on — any registry host, reached at `https://<host>`.
///
/// Cove is not an open proxy by default: a registry that is not configured is refused with `DENIED`.
public final class UpstreamRouter: Sendable {
    public let defaultRegistry: RegistryClient
    public let allowAnyRegistry: Bool
    let configured: [String: RegistryClient]
    let adHoc = Mutex<[String: RegistryClient]>([:])
    let adHocTemplate: UpstreamConfiguration
    let logger: Logger

    /// - Parameters:
    ///   - registries: the configured registries; `defaultName` must be one of them.
    ///   - adHocTemplate: limits for registries created on demand under `allowAnyRegistry` (its URL is ignored).
    public init(registries: [RegistryConfiguration], defaultName: String, allowAnyRegistry: Bool,
                adHocTemplate: UpstreamConfiguration = UpstreamConfiguration(url: "https://localhost"), logger: Logger) {
        var map: [String: RegistryClient] = [:]
        for r in registries { map[r.name] = RegistryClient(configuration: r, logger: logger) }
        configured = map
        defaultRegistry = map[defaultName] ?? RegistryClient(configuration: registries[0], logger: logger)
        self.allowAnyRegistry = allowAnyRegistry
        self.adHocTemplate = adHocTemplate
        self.logger = logger
    }

    /// Every configured registry, sorted by name.
    public var registries: [RegistryClient] { configured.values.sorted { $0.name < $1.name } }

    /// The registry for `name` (nil: the default registry). Docker Hub's aliases all mean `docker.io`.
    /// - Throws: `DENIED` (403) for a registry that is not configured while `allowAnyRegistry` is off, or
    ///   that is named by a non-public IP literal or `localhost` (SSRF rules), `NAME_INVALID` for a malformed host.
    public func registry(named name: String?) throws(DistributionError) -> RegistryClient {
        guard var name = name?.lowercased(), !name.isEmpty else { return defaultRegistry }
        if RegistryConfiguration.dockerHubAliases.contains(name) { name = "docker.io" }
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
            let r = RegistryClient(configuration: RegistryConfiguration(name: name, endpoints: [endpoint]), logger: logger)
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
        if configured[name] != nil || RegistryConfiguration.dockerHubAliases.contains(name) && configured["docker.io"] != nil { return true }
        return (allowAnyRegistry || defaultRegistry.name == "docker.io") && Self.looksLikeHost(name)
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
