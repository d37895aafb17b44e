/// What a client without (or with empty) credentials may do when `auth` is configured.
public enum AnonymousAccess: String, Sendable, CaseIterable {
    /// Nothing: every path but the health checks answers 401 with the Basic challenge.
    case none
    /// Read what is cached (tags resolve from the cache without revalidation); anything that would need the
    /// upstream answers 401 with the challenge, so a client with credentials can retry with them.
    case cached
    /// Pull like an authenticated client, fills included.
    case pull
}

/// The `auth:` configuration: who may use this Cove.
public struct ClientAuthConfiguration: Sendable, Equatable {
    /// Path of the htpasswd file (bcrypt hashes only), re-read on SIGHUP.
    public var htpasswd: String
    public var anonymous: AnonymousAccess

    public init(htpasswd: String, anonymous: AnonymousAccess = .none) {
        self.htpasswd = htpasswd
        self.anonymous = anonymous
    }
}

/// The `tls:` configuration: PEM files, re-read on SIGHUP.
public struct TLSFiles: Sendable, Equatable {
    /// Certificate chain, leaf first (PEM).
    public var certificate: String
    /// Private key (PEM, unencrypted).
    public var key: String

    public init(certificate: String, key: String) {
        self.certificate = certificate
        self.key = key
    }
}
