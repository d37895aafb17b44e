import OCI
/// How to reach one endpoint of an upstream registry (the registry itself, or a mirror/accelerator of it).
public struct UpstreamConfiguration: Sendable {
    /// Base URL without a trailing slash, e.g. `https://registry-1.docker.io`.
    public var url: String
    /// Credentials for HTTP basic auth and for token requests; nil means anonymous.
    public var credentials: Credentials?
    /// Limits for small requests (manifests, tokens, tag lists, HEAD).
    public var requestLimits: TransferLimits
    /// Limits for blob bodies (no total timeout; stalls are caught by the low-speed rule).
    public var blobLimits: TransferLimits
    /// Whether this endpoint is trusted to resolve tags (and list them). An untrusted endpoint (a public
    /// accelerator) only serves content by digest, which Cove verifies, so it cannot hand out a stale or
    /// forged tag.
    public var resolveTags: Bool
    /// Whether this endpoint is itself a mirror serving several registries (another Cove, a registry
    /// accelerator): every registry API request then carries `?ns=<registry name>` so the mirror routes it to the
    /// right registry (containerd does the same for the mirrors in `hosts.toml`).
    public var mirror: Bool
    /// Which addresses this endpoint's requests may connect to (SSRF rules; `.configured` unless the
    /// registry was named by a client under `allow_any_registry`).
    public var addressPolicy = AddressPolicy.configured

    public init(url: String, credentials: Credentials? = nil, requestLimits: TransferLimits = .init(connectTimeout: 5, totalTimeout: 10),
                blobLimits: TransferLimits = .init(connectTimeout: 5), resolveTags: Bool = true, mirror: Bool = false) {
        var url = url
        while url.hasSuffix("/") { url.removeLast() }
        self.url = url
        self.credentials = credentials
        self.requestLimits = requestLimits
        self.blobLimits = blobLimits
        self.resolveTags = resolveTags
        self.mirror = mirror
    }

    /// `requestLimits` under an operation's deadline.
    func requestLimits(within deadline: Deadline) -> TransferLimits {
        var l = requestLimits
        l.deadline = deadline
        return l
    }

    /// True for Docker Hub's registry hosts, where official images live under `library/`.
    public static func isDockerHub(_ url: String) -> Bool {
        guard let host = URLParts(url)?.host else { return false }
        return DockerHub.isAlias(host)
    }

    /// `host[:port]` of the endpoint.
    public var hostKey: String {
        guard let p = URLParts(url) else { return url }
        return p.port.map { "\(p.host):\($0)" } ?? p.host
    }
}

/// One upstream registry as clients name it (`docker.io`, `ghcr.io`, `registry.cn-hangzhou.aliyuncs.com`),
/// with the ordered endpoints Cove may fetch its content from.
public struct RegistryConfiguration: Sendable {
    /// The registry name clients use: containerd's `?ns=`, a path prefix, or the default registry.
    public var name: String
    /// Endpoints in order of preference; at least one must be trusted to resolve tags.
    public var endpoints: [UpstreamConfiguration]
    /// When true, a one-component repository name `x` is sent as `library/x` (Docker Hub's official images).
    public var libraryPrefix: Bool
    /// Hosts besides the endpoints' own registrable domains that may serve bearer-token realms (exact host,
    /// or `*.example.com` for any subdomain). A realm anywhere else is refused: it would receive credentials.
    public var authHosts: [String]
    /// Seconds an endpoint is skipped after a connection error, timeout, 5xx or 429 (without `Retry-After`).
    public var cooldown: Double

    public init(name: String, endpoints: [UpstreamConfiguration], libraryPrefix: Bool? = nil, authHosts: [String] = [], cooldown: Double = 30) {
        self.name = name
        self.endpoints = endpoints
        self.libraryPrefix = libraryPrefix ?? (DockerHub.isAlias(name) || endpoints.contains { UpstreamConfiguration.isDockerHub($0.url) })
        self.authHosts = authHosts
        self.cooldown = cooldown
    }

    /// The registry name for an upstream URL: `docker.io` for Docker Hub hosts, else `host[:port]`.
    public static func name(forURL url: String) -> String {
        UpstreamConfiguration.isDockerHub(url) ? DockerHub.name : UpstreamConfiguration(url: url).hostKey
    }
}

/// A username and password. `description` never shows the password.
public struct Credentials: Sendable, CustomStringConvertible {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
    public var description: String { "\(username):<redacted>" }
    /// `Basic base64(user:password)`.
    var basicAuthorization: String { "Basic " + Array("\(username):\(password)".utf8).base64 }
}

extension Array where Element == UInt8 {
    var base64: String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var i = 0
        while i < count {
            let b0 = self[i], b1 = i + 1 < count ? self[i + 1] : 0, b2 = i + 2 < count ? self[i + 2] : 0
            out.append(table[Int(b0 >> 2)])
            out.append(table[Int((b0 & 3) << 4 | b1 >> 4)])
            out.append(i + 1 < count ? table[Int((b1 & 15) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < count ? table[Int(b2 & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Scheme, host and port of an absolute http(s) URL; enough to compare origins and resolve `Location`.
public struct URLParts: Equatable, Sendable {
    public var scheme: String
    public var host: String
    public var port: Int?
    /// True when the URL carries `user:password@` (refused in configuration: it would be logged).
    public var hasUserInfo: Bool

    public init?(_ url: String) {
        guard let schemeEnd = url.range(of: "://") else { return nil }
        scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else { return nil }
        let rest = url[schemeEnd.upperBound...]
        var authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        hasUserInfo = authority.contains("@")
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[...close]).lowercased()
            let after = authority[authority.index(after: close)...]
            port = nil
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { return nil }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon]).lowercased()
            let digits = authority[authority.index(after: colon)...]
            guard let p = Int(digits), (1...65535).contains(p), digits.allSatisfy(\.isNumber) else { return nil }
            port = p
        } else {
            host = String(authority).lowercased()
            port = nil
        }
        guard !host.isEmpty else { return nil }
    }

    /// The port, defaulted from the scheme.
    public var effectivePort: Int { port ?? (scheme == "https" ? 443 : 80) }

    /// Same scheme, host and port (RFC 6454 origin).
    public func sameOrigin(_ other: URLParts) -> Bool {
        scheme == other.scheme && host == other.host && effectivePort == other.effectivePort
    }

    /// `scheme://host[:port]`.
    public var origin: String { "\(scheme)://\(host)" + (port.map { ":\($0)" } ?? "") }

    /// Resolves a `Location` header value against `base` (absolute, scheme-relative or path-absolute).
    public static func resolve(_ location: String, against base: String) -> String? {
        if URLParts(location) != nil { return location }
        guard let b = URLParts(base) else { return nil }
        if location.hasPrefix("//") { return b.scheme + ":" + location }
        if location.hasPrefix("/") { return b.origin + location }
        return nil
    }
}
