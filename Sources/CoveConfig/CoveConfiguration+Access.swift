import Access

extension CoveConfiguration {
    /// Parses `tls: {certificate, key}`: both or neither. The files are read when the server starts
    /// (`cove serve`, `cove check-config`), not here.
    static func parseTLS(_ root: Section) throws(ConfigError) -> TLSFiles? {
        guard let t = try root.section("tls") else { return nil }
        try t.allow(["certificate", "key"])
        let certificate = try t.string("certificate"), key = try t.string("key")
        guard let certificate else { throw ConfigError(t.key("certificate"), "is required with tls.key (a PEM certificate chain, leaf first)") }
        guard let key else { throw ConfigError(t.key("key"), "is required with tls.certificate (a PEM private key)") }
        return TLSFiles(certificate: certificate, key: key)
    }

    /// Parses `auth: {htpasswd, anonymous}`. `anonymous` defaults to `none` (the file is read at start).
    static func parseAuth(_ root: Section) throws(ConfigError) -> ClientAuthConfiguration? {
        guard let a = try root.section("auth") else { return nil }
        try a.allow(["htpasswd", "anonymous"])
        guard let path = try a.string("htpasswd") else {
            throw ConfigError(a.key("htpasswd"), "is required (an htpasswd file with bcrypt hashes, made with htpasswd -B)")
        }
        var anonymous = AnonymousAccess.none
        if let v = try a.string("anonymous") {
            guard let mode = AnonymousAccess(rawValue: v) else {
                throw ConfigError(a.key("anonymous"), "must be none, cached or pull")
            }
            anonymous = mode
        }
        return ClientAuthConfiguration(htpasswd: path, anonymous: anonymous)
    }

    /// Parses a registry's `repositories: {allow: [...], deny: [...]}` (nil when absent).
    static func parseRepositoryPolicy(_ s: Section) throws(ConfigError) -> RepositoryPolicy? {
        guard let r = try s.section("repositories") else { return nil }
        try r.allow(["allow", "deny"])
        func patterns(_ k: String) throws(ConfigError) -> [RepositoryPattern]? {
            guard let v = r.value(k) else { return nil }
            guard let seq = v.sequence else { throw ConfigError(r.key(k), "must be a list of repository patterns such as library/* or myorg/app") }
            var out: [RepositoryPattern] = []
            for (i, item) in seq.enumerated() {
                guard let text = item.scalar?.string else { throw ConfigError(r.key("\(k)[\(i)]"), "must be a repository pattern") }
                do { out.append(try RepositoryPattern(text)) } catch { throw ConfigError(r.key("\(k)[\(i)]"), error.description) }
            }
            return out
        }
        return RepositoryPolicy(allow: try patterns("allow"), deny: try patterns("deny") ?? [])
    }
}
