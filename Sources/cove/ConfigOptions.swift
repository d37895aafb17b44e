import ArgumentParser
import CoveConfig
import Foundation
import Upstream

/// Options shared by commands that read the configuration: a YAML file plus flag overrides.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "YAML configuration file (see config.example.yml). Without it, embedded defaults apply.")
    var config: String?

    @Option(name: .long, help: "Address to listen on, HOST:PORT (default 0.0.0.0:5000).")
    var listen: String?

    @Option(name: .long, help: "Storage directory for the index and blobs (default ./cove-data).")
    var storage: String?

    @Option(name: .long, help: ArgumentHelp("Single upstream registry, [NAME=]URL, replacing the configured registries.",
                                            discussion: "Without NAME it serves every ?ns= a client sends; with NAME (e.g. docker.io=https://mirror.example) only that registry."))
    var upstream: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    @Option(name: .long, help: "Log format: text (default) or json (one JSON object per line).")
    var logFormat: String?

    @Flag(name: .long, help: "Never contact an upstream: serve what is cached, 404 for the rest (overrides offline:).")
    var offline = false

    /// Defaults, then the file, then flags.
    func load() throws -> CoveConfiguration {
        var configuration = CoveConfiguration()
        if let config {
            guard let text = try? String(contentsOfFile: config, encoding: .utf8) else {
                throw ValidationError("cannot read config file \(config)")
            }
            configuration = try CoveConfiguration.parse(yaml: text)
        }
        if let listen { configuration.listen = try ListenAddress.parse(listen, key: "--listen") }
        if let storage { configuration.storage = storage }
        if let upstream {
            let (name, url) = try CoveConfiguration.parseUpstreamFlag(upstream, key: "--upstream")
            configuration.useSingleUpstream(url: url, name: name)
        }
        if offline { configuration.cache.offline = true }
        if let logLevel {
            guard CoveConfiguration.logLevels.contains(logLevel) else {
                throw ValidationError("--log-level must be one of \(CoveConfiguration.logLevels.joined(separator: ", "))")
            }
            configuration.logLevel = logLevel
        }
        if let logFormat {
            guard CoveConfiguration.logFormats.contains(logFormat) else {
                throw ValidationError("--log-format must be one of \(CoveConfiguration.logFormats.joined(separator: ", "))")
            }
            configuration.logFormat = logFormat
        }
        return configuration
    }
}

/// `cove check-config`: parse and print the effective configuration, without starting anything.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration and print the effective values.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let c = try options.load()
        var lines = [
            "listen: \(c.listen)", "storage: \(c.storage)", "log_level: \(c.logLevel)", "log_format: \(c.logFormat)",
            "shutdown_timeout: \(c.shutdownTimeout)s",
            "default_registry: \(c.defaultRegistry)" + (c.ignoresNamespace ? " (single unnamed upstream: serves every ?ns=)" : ""), "allow_any_registry: \(c.allowAnyRegistry)", "offline: \(c.cache.offline)",
            "network: connect_timeout \(c.network.connectTimeout)s, request_timeout \(c.network.requestTimeout)s, "
                + "low_speed \(c.network.lowSpeedLimit) B/s for \(c.network.lowSpeedTime)s, cooldown \(c.network.cooldown)s",
            "cache: tag_ttl \(c.cache.tagTTL)s, max_blob_size \(c.cache.maxBlobSize.map { "\($0) bytes" } ?? "unlimited"), "
                + "max_concurrent_fills \(c.cache.maxConcurrentFills), fill_retries \(c.cache.fillRetries)",
            "cache budget: max_size \(c.cache.maxSize.map { "\($0) bytes (evicts down to \(Int64(Double($0) * c.cache.lowWatermark)))" } ?? "none"), "
                + "min_free \(c.cache.minFree), eviction_grace \(c.cache.evictionGrace)s",
        ]
        lines += try Self.accessLines(c)
        for r in c.registries {
            lines.append("registry \(r.name): library_prefix \(r.libraryPrefix), auth_hosts [\(r.authHosts.joined(separator: ", "))]")
            if let p = c.repositoryPolicies[r.name] {
                lines.append("  repositories: allow \(p.allow.map { "[\($0.map(\.text).joined(separator: ", "))]" } ?? "all"), deny [\(p.deny.map(\.text).joined(separator: ", "))]")
            }
            for e in r.endpoints {
                lines.append("  endpoint \(e.url): resolve_tags \(e.resolveTags), mirror \(e.mirror), credentials \(e.credentials.map { "\($0)" } ?? "none (anonymous)")")
            }
        }
        print(lines.joined(separator: "\n"))
    }

    /// `tls` and `auth`, after loading their files as `cove serve` would (so a bad file fails here too).
    static func accessLines(_ c: CoveConfiguration) throws -> [String] {
        var lines: [String] = []
        if let tls = c.tls {
            do { _ = try ListenerCertificates.makeContext(tls) } catch { throw ValidationError(error.description) }
            lines.append("tls: certificate \(tls.certificate), key \(tls.key)")
        } else {
            lines.append("tls: none (plain HTTP)")
        }
        if let auth = c.auth {
            let users = try ClientAccessSetup.htpasswd(auth.htpasswd)
            lines.append("auth: htpasswd \(auth.htpasswd) (\(users.users.count) users), anonymous \(auth.anonymous.rawValue)")
        } else {
            lines.append("auth: none (anonymous clients may pull)")
        }
        return lines
    }
}
