import Foundation
import Mirror
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
    public var upstream: UpstreamConfiguration = UpstreamConfiguration(url: "https://registry-1.docker.io")
    public var cache: MirrorConfiguration = MirrorConfiguration()

    public init() {}

    /// The log levels `log_level` accepts.
    public static let logLevels = ["trace", "debug", "info", "notice", "warning", "error", "critical"]

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
        try root.allow(["listen", "storage", "log_level", "upstream", "cache"])
        if let v = try root.string("listen") { config.listen = try ListenAddress.parse(v, key: "listen") }
        if let v = try root.string("storage") {
            guard !v.isEmpty else { throw ConfigError("storage", "must not be empty") }
            config.storage = v
        }
        if let v = try root.string("log_level") {
            guard logLevels.contains(v) else { throw ConfigError("log_level", "must be one of \(logLevels.joined(separator: ", "))") }
            config.logLevel = v
        }
        if let u = try root.section("upstream") {
            try u.allow(["url", "username", "password_file", "password_env", "library_prefix", "connect_timeout",
                         "request_timeout", "low_speed_limit", "low_speed_time"])
            var up = config.upstream
            if let url = try u.string("url") {
                guard URLParts(url) != nil else { throw ConfigError("upstream.url", "must be an absolute http:// or https:// URL") }
                up = UpstreamConfiguration(url: url)
            }
            if let prefix = try u.string("library_prefix") {
                switch prefix {
                case "auto": up.libraryPrefix = UpstreamConfiguration.isDockerHub(up.url)
                case "true": up.libraryPrefix = true
                case "false": up.libraryPrefix = false
                default: throw ConfigError("upstream.library_prefix", "must be auto, true or false")
                }
            }
            let username = try u.string("username")
            let passwordFile = try u.string("password_file")
            let passwordEnv = try u.string("password_env")
            if passwordFile != nil, passwordEnv != nil {
                throw ConfigError("upstream.password_file", "set password_file or password_env, not both")
            }
            var password: String?
            if let passwordFile {
                guard let text = try? String(contentsOfFile: passwordFile, encoding: .utf8) else {
                    throw ConfigError("upstream.password_file", "cannot read \(passwordFile)")
                }
                password = text.trimmingCharacters(in: .newlines)
            } else if let passwordEnv {
                guard let value = environment[passwordEnv] else {
                    throw ConfigError("upstream.password_env", "environment variable \(passwordEnv) is not set")
                }
                password = value
            }
            if let username, !username.isEmpty {
                guard let password else { throw ConfigError("upstream.username", "needs password_file or password_env") }
                up.credentials = Credentials(username: username, password: password)
            } else if password != nil {
                throw ConfigError("upstream.username", "is required when a password is configured")
            }
            if let v = try u.duration("connect_timeout") {
                up.requestLimits.connectTimeout = v
                up.blobLimits.connectTimeout = v
            }
            if let v = try u.duration("request_timeout") { up.requestLimits.totalTimeout = v }
            if let v = try u.size("low_speed_limit") {
                up.requestLimits.lowSpeedLimit = Int(v)
                up.blobLimits.lowSpeedLimit = Int(v)
            }
            if let v = try u.duration("low_speed_time") {
                up.requestLimits.lowSpeedTime = v
                up.blobLimits.lowSpeedTime = v
            }
            config.upstream = up
        }
        if let c = try root.section("cache") {
            try c.allow(["tag_ttl", "max_blob_size", "max_concurrent_fills", "fill_retries"])
            if let v = try c.duration("tag_ttl") { config.cache.tagTTL = v }
            if let v = try c.size("max_blob_size") { config.cache.maxBlobSize = v == 0 ? nil : v }
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

    func int(_ k: String) throws(ConfigError) -> Int? {
        guard let s = try string(k) else { return nil }
        guard let v = Int(s) else { throw ConfigError(key(k), "\"\(s)\" is not an integer") }
        return v
    }
}
