import Access
import Foundation
import Mirror
import OCI
import Upstream
import Yams

/// Everything `cove serve` needs, typed. Built from the embedded defaults, then a YAML file, then CLI flags.
public struct CoveConfiguration: Sendable {
    /// Address to listen on.
    public var listen: ListenAddress = ListenAddress(host: "0.0.0.0", port: 5000)
    /// Storage root (SQLite index + `blobs/` + `tmp/`).
    public var storage: String = "./cove-data"
    /// swift-log level name.
    public var logLevel: String = "info"
    /// Log line format: `text` (swift-log's stream format) or `json` (one object per line).
    public var logFormat: String = "text"
    /// Seconds a graceful shutdown (SIGTERM/SIGINT) may take: responses in flight finish and blob fills commit
    /// within it; then the rest is cancelled. 25 s leaves room under systemd's `TimeoutStopSec=30`.
    public var shutdownTimeout: Double = 25
    /// Upstream registries in configuration order (never empty).
    public var registries: [RegistryConfiguration] = [CoveConfiguration.dockerHub]
    /// Name of the registry for requests that name none (no `?ns=`, no path prefix).
    public var defaultRegistry: String = DockerHub.name
    /// Serve registries that are not configured, at `https://<host>` (off: Cove is not an open proxy).
    public var allowAnyRegistry = false
    /// True for a single unnamed upstream (`--upstream URL`, `upstream:` without `name`): it serves every
    /// `?ns=` a client sends (see `UpstreamRouter.ignoresNamespace`).
    public var ignoresNamespace = false
    /// Timeouts and cool-down applied to every endpoint.
    public var network = NetworkSettings()
    public var cache: MirrorConfiguration = MirrorConfiguration()
    /// HTTPS on the listener (`tls:`); nil: plain HTTP.
    public var tls: TLSFiles?
    /// Client authentication (`auth:`); nil: every client is anonymous and may pull.
    public var auth: ClientAuthConfiguration?
    /// Canonical registry name → which repositories clients may use (`repositories:`); absent: all.
    public var repositoryPolicies: [String: RepositoryPolicy] = [:]

    public init() {}

    /// The embedded default upstream: Docker Hub.
    public static let dockerHub = RegistryConfiguration(name: DockerHub.name, endpoints: [UpstreamConfiguration(url: DockerHub.apiURL)])

    /// The log levels `log_level` accepts.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]
    /// The formats `log_format` accepts.
    public static let logFormats = ["text", "json"]

    /// The registries with `network` applied to every endpoint: what the upstream clients are built from.
    public var effectiveRegistries: [RegistryConfiguration] {
        registries.map { r in
            var r = r
            r.cooldown = network.cooldown
            r.endpoints = r.endpoints.map { e in
                var e = e
                e.requestLimits = network.requestLimits
                e.blobLimits = network.blobLimits
                return e
            }
            return r
        }
    }

    /// Replaces the registries with one registry at `url` (the `upstream:` key and the `--upstream` flag).
    /// - Parameters:
    ///   - name: the registry name clients use (`docker.io`, `ghcr.io`); with a name, `?ns=` must match it like
    ///     any configured registry. Without one the upstream is named after its URL (`docker.io` for Docker
    ///     Hub, else `host[:port]`, the key of its tags in the cache) and serves every `?ns=`.
    ///   - mirror: the URL is itself a mirror (another Cove): requests carry `?ns=<registry name>`.
    public mutating func useSingleUpstream(url: String, name: String? = nil, credentials: Credentials? = nil, libraryPrefix: Bool? = nil,
                                           mirror: Bool = false) {
        let registryName = name.map(DockerHub.canonicalRegistryName) ?? RegistryConfiguration.name(forURL: url)
        registries = [RegistryConfiguration(name: registryName, endpoints: [UpstreamConfiguration(url: url, credentials: credentials, mirror: mirror)],
                                            libraryPrefix: libraryPrefix)]
        defaultRegistry = registryName
        ignoresNamespace = name == nil
    }

    /// Parses the `--upstream` flag, `[NAME=]URL`.
    /// - Returns: the registry name (nil when absent) and the URL.
    /// - Throws: `ConfigError` for `key` when the URL or the name is malformed.
    public static func parseUpstreamFlag(_ text: String, key: String) throws(ConfigError) -> (name: String?, url: String) {
        var name: String?, url = text
        if let eq = text.firstIndex(of: "="), !text[..<eq].contains("/") {
            name = String(text[..<eq]).lowercased()
            url = String(text[text.index(after: eq)...])
            guard UpstreamRouter.looksLikeHost(name!) else {
                throw ConfigError(key, "registry name \(name!) must be a host such as docker.io or registry.example.com:5000 (NAME=URL)")
            }
        }
        try checkURL(url, key: key)
        return (name, url)
    }

    /// Parses a YAML document on top of the defaults.
    /// - Parameter environment: where `password_env` variables are looked up.
    /// - Throws: `ConfigError` naming the key path for unknown keys, wrong types and bad values.
    public static func parse(yaml: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> CoveConfiguration {
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch {
            throw ConfigError("", "not valid YAML: \(error)")
        }
        var config = CoveConfiguration()
        guard let node else { return config }
        let root = try Section(node, path: "")
        try root.allow(["listen", "storage", "log_level", "log_format", "shutdown_timeout", "upstream", "registries", "default_registry",
                        "allow_any_registry", "offline", "network", "cache", "tls", "auth"])
        config.tls = try parseTLS(root)
        config.auth = try parseAuth(root)
        if let v = try root.string("listen") { config.listen = try ListenAddress.parse(v, key: "listen") }
        if let v = try root.string("storage") { config.storage = v }
        if let v = try root.string("log_level") {
            guard logLevels.contains(v) else { throw ConfigError("log_level", "must be one of \(logLevels.joined(separator: ", "))") }
            config.logLevel = v
        }
        if let v = try root.string("log_format") {
            guard logFormats.contains(v) else { throw ConfigError("log_format", "must be one of \(logFormats.joined(separator: ", "))") }
            config.logFormat = v
        }
        if let v = try root.duration("shutdown_timeout") {
            guard v > 0, v <= 3600 else { throw ConfigError("shutdown_timeout", "must be more than 0s and at most 1h") }
            config.shutdownTimeout = v
        }
        if let v = try root.bool("allow_any_registry") { config.allowAnyRegistry = v }
        if let v = try root.bool("offline") { config.cache.offline = v }
        if let n = try root.section("network") {
            try n.allow(["connect_timeout", "request_timeout", "low_speed_limit", "low_speed_time", "cooldown"])
            if let v = try n.duration("connect_timeout") { config.network.connectTimeout = v }
            if let v = try n.duration("request_timeout") { config.network.requestTimeout = v }
            if let v = try n.size("low_speed_limit") { config.network.lowSpeedLimit = Int(v) }
            if let v = try n.duration("low_speed_time") { config.network.lowSpeedTime = v }
            if let v = try n.duration("cooldown") { config.network.cooldown = v }
        }
        let upstream = try root.section("upstream")
        let registries = try root.section("registries")
        if upstream != nil, registries != nil {
            throw ConfigError("upstream", "use either upstream (one registry) or registries (several), not both")
        }
        if let u = upstream {
            try u.allow(["url", "name", "username", "password_file", "password_env", "library_prefix", "mirror", "repositories"])
            let url = try u.string("url") ?? DockerHub.apiURL
            try checkURL(url, key: u.key("url"))
            let name = try u.string("name")
            if let name, !UpstreamRouter.looksLikeHost(name.lowercased()) {
                throw ConfigError(u.key("name"), "registry names are hosts such as docker.io, ghcr.io or registry.example.com:5000")
            }
            config.useSingleUpstream(url: url, name: name, credentials: try credentials(u, environment), libraryPrefix: try libraryPrefix(u),
                                     mirror: try u.bool("mirror") ?? false)
            if let policy = try parseRepositoryPolicy(u) { config.repositoryPolicies[config.defaultRegistry] = policy }
        }
        if let r = registries {
            config.registries = []
            for (nameNode, value) in r.mapping {
                let name = (nameNode.scalar?.string ?? "").lowercased()
                let path = r.key(name)
                guard UpstreamRouter.looksLikeHost(name) else {
                    throw ConfigError(path, "registry names are hosts such as docker.io, ghcr.io or registry.example.com:5000")
                }
                let section = try Section(value, path: path)
                try section.allow(["endpoints", "library_prefix", "auth_hosts", "repositories"])
                guard let list = section.value("endpoints")?.sequence, !list.isEmpty else {
                    throw ConfigError(section.key("endpoints"), "must list at least one endpoint")
                }
                var endpoints: [UpstreamConfiguration] = []
                for (i, item) in list.enumerated() {
                    let e = try Section(item, path: section.key("endpoints[\(i)]"))
                    try e.allow(["url", "resolve_tags", "mirror", "username", "password_file", "password_env"])
                    guard let url = try e.string("url") else { throw ConfigError(e.key("url"), "is required") }
                    try checkURL(url, key: e.key("url"))
                    endpoints.append(UpstreamConfiguration(url: url, credentials: try credentials(e, environment),
                                                           resolveTags: try e.bool("resolve_tags") ?? true, mirror: try e.bool("mirror") ?? false))
                }
                guard endpoints.contains(where: \.resolveTags) else {
                    throw ConfigError(section.key("endpoints"), "at least one endpoint must have resolve_tags: true")
                }
                let authHosts = try section.stringList("auth_hosts")
                let canonical = DockerHub.canonicalRegistryName(name)
                guard !config.registries.contains(where: { $0.name == canonical }) else {
                    throw ConfigError(path, "configured twice (\(canonical); docker.io, index.docker.io and registry-1.docker.io are one registry)")
                }
                if let policy = try parseRepositoryPolicy(section) { config.repositoryPolicies[canonical] = policy }
                config.registries.append(RegistryConfiguration(name: canonical,
                                                               endpoints: endpoints, libraryPrefix: try libraryPrefix(section),
                                                               authHosts: authHosts))
            }
            guard !config.registries.isEmpty else { throw ConfigError("registries", "must configure at least one registry") }
            config.defaultRegistry = config.registries.contains { $0.name == DockerHub.name } ? DockerHub.name : config.registries[0].name
        }
        if let d = try root.string("default_registry") {
            let name = DockerHub.canonicalRegistryName(d)
            guard config.registries.contains(where: { $0.name == name }) else {
                throw ConfigError("default_registry", "\(d) is not a configured registry (\(config.registries.map(\.name).joined(separator: ", ")))")
            }
            config.defaultRegistry = name
        }
        if let c = try root.section("cache") {
            try c.allow(["tag_ttl", "max_blob_size", "max_concurrent_fills", "fill_retries", "max_size", "min_free", "eviction_grace",
                         "manifest_memory"])
            if let v = try c.duration("eviction_grace") { config.cache.evictionGrace = v }
            if let v = try c.string("max_size") {
                if v.lowercased() == "none" { config.cache.maxSize = nil } else {
                    guard let bytes = Units.bytes(v) else { throw ConfigError("cache.max_size", "\"\(v)\" is not a size (e.g. 200GiB) or none") }
                    config.cache.maxSize = bytes == 0 ? nil : bytes
                }
            }
            if let v = try c.string("min_free") {
                guard let free = Units.freeSpace(v) else {
                    throw ConfigError("cache.min_free", "\"\(v)\" is not a size (e.g. 20GiB) or a percentage of the file system below 100 (e.g. 5%)")
                }
                config.cache.minFree = free
            }
            if let v = try c.duration("tag_ttl") { config.cache.tagTTL = v }
            if let v = try c.size("max_blob_size") { config.cache.maxBlobSize = v == 0 ? nil : v }
            if let v = try c.size("manifest_memory") {
                guard v <= 1 << 40 else { throw ConfigError("cache.manifest_memory", "\(v) bytes is more than 1 TiB") }
                config.cache.manifestMemory = Int(v)
            }
            if let v = try c.int("max_concurrent_fills") {
                guard v >= 1 else { throw ConfigError("cache.max_concurrent_fills", "must be at least 1") }
                config.cache.maxConcurrentFills = v
            }
            if let v = try c.int("fill_retries") {
                guard v >= 0 else { throw ConfigError("cache.fill_retries", "must be 0 or more") }
                config.cache.fillRetries = v
            }
        }
        return config
    }

    /// An absolute http(s) URL with a valid port and no `user:password@` (credentials belong in
    /// `username`/`password_file`, where they are never printed or logged).
    public static func checkURL(_ url: String, key: String) throws(ConfigError) {
        guard let parts = URLParts(url) else { throw ConfigError(key, "must be an absolute http:// or https:// URL with a valid port") }
        guard !parts.hasUserInfo else {
            throw ConfigError(key, "must not contain credentials; use username with password_file or password_env")
        }
    }

    private static func libraryPrefix(_ s: Section) throws(ConfigError) -> Bool? {
        guard let v = try s.string("library_prefix") else { return nil }
        switch v {
        case "auto": return nil
        case "true": return true
        case "false": return false
        default: throw ConfigError(s.key("library_prefix"), "must be auto, true or false")
        }
    }

    /// `username` with `password_file` or `password_env`; the password never comes from the YAML itself.
    private static func credentials(_ s: Section, _ environment: [String: String]) throws(ConfigError) -> Credentials? {
        let username = try s.string("username")
        let passwordFile = try s.string("password_file")
        let passwordEnv = try s.string("password_env")
        if passwordFile != nil, passwordEnv != nil {
            throw ConfigError(s.key("password_file"), "set password_file or password_env, not both")
        }
        var password: String?
        if let passwordFile {
            guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                throw ConfigError(s.key("password_file"), "cannot read \(passwordFile)")
            }
            password = text.trimmingCharacters(in: .newlines)
        } else if let passwordEnv {
            guard let value = environment[passwordEnv] else {
                throw ConfigError(s.key("password_env"), "environment variable \(passwordEnv) is not set")
            }
            password = value
        }
        if let username {
            guard let password else { throw ConfigError(s.key("username"), "needs password_file or password_env") }
            return Credentials(username: username, password: password)
        }
        if password != nil { throw ConfigError(s.key("username"), "is required when a password is configured") }
        return nil
    }
}

/// Timeouts and cool-down for every upstream endpoint.
///
/// The defaults keep every client's wait for Cove's own answer under 15 s (issue 7): each upstream operation
/// (token + manifest GET with failover, tag revalidation HEAD + GET, tag list, blob HEAD, the wait for a blob
/// GET's response head including retries) runs under one deadline of `requestTimeout`; `connectTimeout` is at
/// most that, and a revalidation HEAD is bounded by `connectTimeout` alone.
public struct NetworkSettings: Sendable {
    /// Seconds to establish a connection (TCP + TLS).
    public var connectTimeout: Double = 5
    /// Seconds one small operation may take in all (manifests, tokens, tag lists, HEAD; token fetch, redirects
    /// and failover across endpoints included), and the wait for a blob's response head.
    public var requestTimeout: Double = 10
    /// Bytes per second below which a transfer counts as stalled after `lowSpeedTime` seconds.
    public var lowSpeedLimit: Int = 1024
    public var lowSpeedTime: Double = 30
    /// Seconds a failing endpoint is skipped.
    public var cooldown: Double = 30

    public init() {}

    public var requestLimits: TransferLimits {
        TransferLimits(connectTimeout: connectTimeout, lowSpeedLimit: lowSpeedLimit, lowSpeedTime: lowSpeedTime, totalTimeout: requestTimeout)
    }

    public var blobLimits: TransferLimits {
        TransferLimits(connectTimeout: connectTimeout, lowSpeedLimit: lowSpeedLimit, lowSpeedTime: lowSpeedTime, totalTimeout: 0)
    }
}

/// `HOST:PORT` to listen on; IPv6 hosts in brackets (`[::]:5000`).
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// - Throws: `ConfigError` for `key` when malformed or the port is outside 0...65535.
    public static func parse(_ text: String, key: String) throws(ConfigError) -> ListenAddress {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ConfigError(key, "must be HOST:PORT, e.g. 0.0.0.0:5000 or [::]:5000")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ConfigError(key, "must be HOST:PORT, e.g. 0.0.0.0:5000 or [::]:5000") }
        return ListenAddress(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A configuration error: which key, and what is wrong with it.
public struct ConfigError: Error, Sendable, CustomStringConvertible, Equatable {
    /// Dotted key path, e.g. `upstream.url`; empty for the document itself.
    public var key: String
    public var message: String
    public init(_ key: String, _ message: String) {
        self.key = key
        self.message = message
    }
    public var description: String { key.isEmpty ? "config: \(message)" : "config key \(key): \(message)" }
}

/// A YAML mapping with typed accessors that name the full key path in every error.
struct Section {
    let mapping: Node.Mapping
    let path: String

    init(_ node: Node, path: String) throws(ConfigError) {
        guard let mapping = node.mapping else { throw ConfigError(path, "must be a mapping of keys to values") }
        self.mapping = mapping
        self.path = path
    }

    func key(_ k: String) -> String { path.isEmpty ? k : path + "." + k }

    /// Fails on the first key not in `known`.
    func allow(_ known: Set<String>) throws(ConfigError) {
        for (k, _) in mapping {
            let name = k.scalar?.string ?? "\(k)"
            guard known.contains(name) else {
                throw ConfigError(key(name), "unknown key (known keys here: \(known.sorted().joined(separator: ", ")))")
            }
        }
    }

    func value(_ k: String) -> Node? { mapping[Node(k)] }

    func string(_ k: String) throws(ConfigError) -> String? {
        guard let v = value(k) else { return nil }
        if case .scalar(let s) = v {
            if s.string.isEmpty || (s.style == .plain && (s.string == "null" || s.string == "~")) { return nil }
            return s.string
        }
        throw ConfigError(key(k), "must be a single value")
    }

    func section(_ k: String) throws(ConfigError) -> Section? {
        guard let v = value(k) else { return nil }
        if case .scalar(let s) = v, s.style == .plain, s.string == "null" || s.string.isEmpty { return nil }
        return try Section(v, path: key(k))
    }

    func duration(_ k: String) throws(ConfigError) -> Double? {
        guard let s = try string(k) else { return nil }
        guard let v = Units.seconds(s) else { throw ConfigError(key(k), "\"\(s)\" is not a duration (e.g. 30s, 5m, 168h)") }
        return v
    }

    func size(_ k: String) throws(ConfigError) -> Int64? {
        guard let s = try string(k) else { return nil }
        guard let v = Units.bytes(s) else { throw ConfigError(key(k), "\"\(s)\" is not a size (e.g. 4096, 512MiB, 200GiB)") }
        return v
    }

    func bool(_ k: String) throws(ConfigError) -> Bool? {
        guard let s = try string(k) else { return nil }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw ConfigError(key(k), "\"\(s)\" is not true or false")
        }
    }

    func stringList(_ k: String) throws(ConfigError) -> [String] {
        guard let v = value(k) else { return [] }
        guard let seq = v.sequence else { throw ConfigError(key(k), "must be a list") }
        var out: [String] = []
        for item in seq {
            guard let s = item.scalar?.string, !s.isEmpty else { throw ConfigError(key(k), "must be a list of host names") }
            out.append(s.lowercased())
        }
        return out
    }

    func int(_ k: String) throws(ConfigError) -> Int? {
        guard let s = try string(k) else { return nil }
        guard let v = Int(s) else { throw ConfigError(key(k), "\"\(s)\" is not an integer") }
        return v
    }
}
