import CoveConfig
import Foundation
import Testing
import Upstream

@Suite("Configuration file parsing")
struct ConfigParsingTests {
    @Test func emptyDocumentGivesEmbeddedDefaults() throws {
        let c = try CoveConfiguration.parse(yaml: "")
        #expect(c.listen == ListenAddress(host: "0.0.0.0", port: 5000))
        #expect(c.storage == "./cove-data")
        #expect(c.registries.map(\.name) == ["docker.io"])
        #expect(c.registries[0].endpoints.map(\.url) == ["https://registry-1.docker.io"])
        #expect(c.registries[0].libraryPrefix)
        #expect(c.defaultRegistry == "docker.io")
        #expect(!c.allowAnyRegistry && !c.cache.offline)
        #expect(c.cache.tagTTL == 300)
    }

    @Test func exampleFileParsesToTheDocumentedDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../config.example.yml")
        let text = try String(contentsOf: url, encoding: .utf8)
        let c = try CoveConfiguration.parse(yaml: text)
        let d = try CoveConfiguration.parse(yaml: "")
        #expect(c.listen == d.listen)
        #expect(c.storage == d.storage)
        #expect(c.defaultRegistry == d.defaultRegistry)
        #expect(c.cache.tagTTL == d.cache.tagTTL)
        #expect(c.cache.maxConcurrentFills == d.cache.maxConcurrentFills)
        #expect(c.network.connectTimeout == d.network.connectTimeout)
        #expect(c.network.cooldown == d.network.cooldown)
        #expect(c.network.requestTimeout == d.network.requestTimeout)
        // The example's registries section is the documented multi-registry setup.
        let hub = try #require(c.registries.first { $0.name == "docker.io" })
        #expect(hub.endpoints.first?.url == "https://registry-1.docker.io")
        #expect(hub.endpoints.first?.resolveTags == true)
        #expect(hub.endpoints.dropFirst().allSatisfy { !$0.resolveTags })
        #expect(hub.endpoints.allSatisfy { $0.credentials == nil })
    }

    @Test func fullDocument() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-cfg-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let pw = dir.appendingPathComponent("pw")
        try "s3cret\n".write(to: pw, atomically: true, encoding: .utf8)
        let c = try CoveConfiguration.parse(yaml: """
        listen: "[::1]:5055"
        storage: /var/lib/cove
        log_level: debug
        upstream:
          url: http://127.0.0.1:5000/
          username: alice
          password_file: \(pw.path)
          library_prefix: "true"
        network:
          connect_timeout: 2s
          request_timeout: 1m
          low_speed_limit: 10KiB
          low_speed_time: 20s
          cooldown: 45s
        cache:
          tag_ttl: 168h
          max_blob_size: 2GiB
          max_concurrent_fills: 4
          fill_retries: 5
        """)
        #expect(c.listen == ListenAddress(host: "::1", port: 5055))
        let registry = try #require(c.effectiveRegistries.first)
        #expect(registry.name == "127.0.0.1:5000" && c.defaultRegistry == "127.0.0.1:5000")
        let endpoint = try #require(registry.endpoints.first)
        #expect(endpoint.url == "http://127.0.0.1:5000")
        #expect(endpoint.credentials?.username == "alice")
        #expect(endpoint.credentials?.password == "s3cret")
        #expect(registry.libraryPrefix)
        #expect(registry.cooldown == 45)
        #expect(endpoint.requestLimits.connectTimeout == 2)
        #expect(endpoint.blobLimits.connectTimeout == 2)
        #expect(endpoint.requestLimits.totalTimeout == 60)
        #expect(endpoint.blobLimits.totalTimeout == 0)
        #expect(endpoint.blobLimits.lowSpeedLimit == 10240)
        #expect(c.cache.tagTTL == 168 * 3600)
        #expect(c.cache.maxBlobSize == Int64(2_147_483_648))
        #expect(c.cache.maxConcurrentFills == 4)
        #expect(c.cache.fillRetries == 5)
    }

    /// Issue 11: the manifest memory defaults to 64 MiB, takes a size, and 0 turns it off.
    @Test func manifestMemory() throws {
        #expect(try CoveConfiguration.parse(yaml: "").cache.manifestMemory == 64 << 20)
        #expect(try CoveConfiguration.parse(yaml: "cache:\n  manifest_memory: 8MiB\n").cache.manifestMemory == 8 << 20)
        #expect(try CoveConfiguration.parse(yaml: "cache:\n  manifest_memory: 0\n").cache.manifestMemory == 0)
    }

    @Test func passwordFromEnvironment() throws {
        let c = try CoveConfiguration.parse(yaml: "upstream:\n  username: bob\n  password_env: COVE_PW\n", environment: ["COVE_PW": "pw"])
        #expect(c.registries[0].endpoints[0].credentials?.password == "pw")
    }

    /// Issue 7: with the defaults, a client gets Cove's own answer within 15 s whatever upstream leg stalls.
    /// Every leg (token + manifest GET with failover, revalidation HEAD + GET, tag list, blob HEAD, the wait for
    /// a blob GET's response head with its retries) runs under one deadline of `request_timeout`; a revalidation
    /// HEAD is bounded by `connect_timeout` inside it. So the bound is `request_timeout` for every endpoint.
    @Test func defaultTimeoutsAnswerEveryClientWithin15Seconds() throws {
        let c = try CoveConfiguration.parse(yaml: "")
        let limit = 15.0
        #expect(c.network.requestTimeout > 0 && c.network.requestTimeout <= limit)
        #expect(c.network.connectTimeout <= c.network.requestTimeout)
        for r in c.effectiveRegistries {
            for e in r.endpoints {
                // Small requests: bounded; blob GETs: their response head is bounded by the same operation deadline.
                #expect(e.requestLimits.totalTimeout > 0 && e.requestLimits.totalTimeout <= limit)
                #expect(e.requestLimits.connectTimeout <= e.requestLimits.totalTimeout)
                #expect(e.blobLimits.connectTimeout <= e.requestLimits.totalTimeout)
            }
        }
        // The library defaults (used by tests and embedders) agree with the configuration defaults.
        let bare = UpstreamConfiguration(url: "https://registry.example")
        #expect(bare.requestLimits.totalTimeout == c.network.requestTimeout && bare.requestLimits.connectTimeout == c.network.connectTimeout)
    }

    @Test func mirrorEndpoints() throws {
        let c = try CoveConfiguration.parse(yaml: """
        registries:
          reg-a.test:
            endpoints:
              - url: http://regional-cove.example:5000
                mirror: true
              - url: https://reg-a.test
        """)
        #expect(c.registries[0].endpoints.map(\.mirror) == [true, false])
        let single = try CoveConfiguration.parse(yaml: "upstream:\n  url: http://upper.example:5000\n  mirror: true\n")
        #expect(single.registries[0].endpoints[0].mirror)
        #expect(try CoveConfiguration.parse(yaml: "").registries[0].endpoints[0].mirror == false)
        #expect(throws: ConfigError.self) {
            try CoveConfiguration.parse(yaml: "upstream:\n  url: http://upper.example:5000\n  mirror: maybe\n")
        }
    }

    @Test(arguments: [
        ("lisen: 1.2.3.4:5", "lisen"),
        ("upstream:\n  pasword_file: x\n", "upstream.pasword_file"),
        ("cache:\n  tag_tll: 5m\n", "cache.tag_tll"),
        ("cache:\n  tag_ttl: soon\n", "cache.tag_ttl"),
        ("cache:\n  max_blob_size: 12XB\n", "cache.max_blob_size"),
        ("cache:\n  manifest_memory: lots\n", "cache.manifest_memory"),
        ("cache:\n  manifest_memory: 2TiB\n", "cache.manifest_memory"),
        ("cache:\n  max_concurrent_fills: 0\n", "cache.max_concurrent_fills"),
        ("listen: 5000\n", "listen"),
        ("listen: \"host:99999\"\n", "listen"),
        ("upstream:\n  url: ftp://x\n", "upstream.url"),
        ("upstream:\n  username: a\n", "upstream.username"),
        ("upstream:\n  username: a\n  password_env: NOPE_NOT_SET\n", "upstream.password_env"),
        ("upstream:\n  username: a\n  password_file: /nonexistent/pw\n", "upstream.password_file"),
        ("log_level: loud\n", "log_level"),
        ("log_format: xml\n", "log_format"),
        ("shutdown_timeout: soon\n", "shutdown_timeout"),
        ("shutdown_timeout: 0s\n", "shutdown_timeout"),
        ("shutdown_timeout: 2h\n", "shutdown_timeout"),
        ("upstream: [1, 2]\n", "upstream"),
        ("storage: [a]\n", "storage"),
    ])
    func errorsNameTheKey(_ yaml: String, _ key: String) {
        do {
            _ = try CoveConfiguration.parse(yaml: yaml, environment: [:])
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.key == key)
            #expect(error.description.contains(key))
        }
    }

    @Test func logFormatAndShutdownTimeout() throws {
        let defaults = try CoveConfiguration.parse(yaml: "storage: /x\n")
        #expect(defaults.logFormat == "text" && defaults.shutdownTimeout == 25)
        let c = try CoveConfiguration.parse(yaml: "log_format: json\nshutdown_timeout: 1m\n")
        #expect(c.logFormat == "json" && c.shutdownTimeout == 60)
    }

    @Test func severalRegistries() throws {
        let c = try CoveConfiguration.parse(yaml: """
        default_registry: ghcr.io
        allow_any_registry: true
        offline: yes
        registries:
          docker.io:
            auth_hosts: [auth.docker.io]
            endpoints:
              - url: https://registry-1.docker.io
              - url: https://abc123.mirror.aliyuncs.com
                resolve_tags: false
          ghcr.io:
            endpoints:
              - url: https://ghcr.io
                username: bob
                password_env: GHCR_TOKEN
        """, environment: ["GHCR_TOKEN": "t0k"])
        #expect(c.registries.map(\.name) == ["docker.io", "ghcr.io"])
        #expect(c.defaultRegistry == "ghcr.io")
        #expect(c.allowAnyRegistry && c.cache.offline)
        #expect(c.registries[0].libraryPrefix && !c.registries[1].libraryPrefix)
        #expect(c.registries[0].authHosts == ["auth.docker.io"])
        #expect(c.registries[0].endpoints.map(\.resolveTags) == [true, false])
        #expect(c.registries[1].endpoints[0].credentials?.password == "t0k")
    }

    @Test(arguments: [
        ("registries:\n  docker.io:\n    endpoints: []\n", "registries.docker.io.endpoints"),
        ("registries:\n  docker.io:\n    endpoints:\n      - url: https://m.example\n        resolve_tags: false\n", "registries.docker.io.endpoints"),
        ("registries:\n  docker.io:\n    endpoints:\n      - url: nope\n", "registries.docker.io.endpoints[0].url"),
        ("registries:\n  docker.io:\n    endpoints:\n      - url: https://x.example\n        trusted: true\n", "registries.docker.io.endpoints[0].trusted"),
        ("registries:\n  notahost:\n    endpoints:\n      - url: https://x.example\n", "registries.notahost"),
        ("registries:\n  ghcr.io:\n    endpoints:\n      - url: https://ghcr.io\ndefault_registry: quay.io\n", "default_registry"),
        ("upstream:\n  url: https://a.example\nregistries:\n  ghcr.io:\n    endpoints:\n      - url: https://ghcr.io\n", "upstream"),
        ("offline: maybe\n", "offline"),
        ("network:\n  cooldown: later\n", "network.cooldown"),
        ("registries:\n  ghcr.io:\n    auth_hosts: auth.example\n    endpoints:\n      - url: https://ghcr.io\n", "registries.ghcr.io.auth_hosts"),
        ("registries:\n  docker.io:\n    endpoints:\n      - url: https://registry-1.docker.io\n  index.docker.io:\n    endpoints:\n      - url: https://registry-1.docker.io\n", "registries.index.docker.io"),
        ("registries:\n  ghcr.io:\n    endpoints:\n      - url: https://user:secret@ghcr.io\n", "registries.ghcr.io.endpoints[0].url"),
        ("upstream:\n  url: http://host:abc\n", "upstream.url"),
        ("upstream:\n  url: http://u:p@host\n", "upstream.url"),
        ("network:\n  connect_timeout: 1e300s\n", "network.connect_timeout"),
        ("cache:\n  max_blob_size: 1e30GiB\n", "cache.max_blob_size"),
        ("cache:\n  max_size: lots\n", "cache.max_size"),
        ("cache:\n  max_size: -5GiB\n", "cache.max_size"),
        ("cache:\n  min_free: 100%\n", "cache.min_free"),
        ("cache:\n  min_free: -1%\n", "cache.min_free"),
        ("cache:\n  min_free: 5 percent\n", "cache.min_free"),
        ("cache:\n  max_sise: 1GiB\n", "cache.max_sise"),
    ])
    func registryErrorsNameTheKey(_ yaml: String, _ key: String) {
        do {
            _ = try CoveConfiguration.parse(yaml: yaml, environment: [:])
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.key == key)
        }
    }

    @Test func invalidYAMLIsAnError() {
        #expect(throws: ConfigError.self) { try CoveConfiguration.parse(yaml: "listen: [unclosed") }
        #expect(throws: ConfigError.self) { try CoveConfiguration.parse(yaml: "- a list\n- at the top\n") }
    }

    @Test func units() {
        #expect(Units.seconds("30s") == 30)
        #expect(Units.seconds("5m") == 300)
        #expect(Units.seconds("500ms") == 0.5)
        #expect(Units.seconds("1d") == 86400)
        #expect(Units.seconds("12") == 12)
        #expect(Units.seconds("-1s") == nil)
        #expect(Units.seconds("fast") == nil)
        #expect(Units.bytes("512MiB") == Int64(536_870_912))
        #expect(Units.bytes("1GB") == 1_000_000_000)
        #expect(Units.bytes("4096") == 4096)
        #expect(Units.bytes("1.5KiB") == 1536)
        #expect(Units.bytes("-5") == nil)
        #expect(Units.bytes("5 bananas") == nil)
        // Case matters, and absurd values are errors rather than crashes or silent "unlimited".
        #expect(Units.seconds("5M") == nil)
        #expect(Units.seconds("1e300s") == nil)
        #expect(Units.seconds("99999999999d") == nil)
        #expect(Units.seconds("inf") == nil && Units.seconds("nan") == nil)
        #expect(Units.bytes("1e30GiB") == nil)
        #expect(Units.bytes("99999999999TiB") == nil)
        #expect(Units.bytes("0.5B") == 1)
        #expect(Units.bytes("+5") == nil)
    }

    @Test func anUnnamedUpstreamServesEveryNamespaceANamedOneOnlyItsOwn() throws {
        let unnamed = try CoveConfiguration.parse(yaml: "upstream:\n  url: http://127.0.0.1:5001\n")
        #expect(unnamed.ignoresNamespace && unnamed.registries.map(\.name) == ["127.0.0.1:5001"] && unnamed.defaultRegistry == "127.0.0.1:5001")
        let named = try CoveConfiguration.parse(yaml: "upstream:\n  url: https://mirror.example\n  name: Index.Docker.io\n")
        #expect(!named.ignoresNamespace && named.registries.map(\.name) == ["docker.io"] && named.defaultRegistry == "docker.io")
        #expect(named.registries[0].libraryPrefix)
        #expect(throws: ConfigError("upstream.name", "registry names are hosts such as docker.io, ghcr.io or registry.example.com:5000")) {
            try CoveConfiguration.parse(yaml: "upstream:\n  url: https://mirror.example\n  name: not a host\n")
        }
        let multi = try CoveConfiguration.parse(yaml: "registries:\n  ghcr.io:\n    endpoints:\n      - url: https://ghcr.io\n")
        #expect(!multi.ignoresNamespace)
        #expect(try !CoveConfiguration.parse(yaml: "").ignoresNamespace)
    }

    @Test func upstreamFlagTakesAnOptionalRegistryName() throws {
        #expect(try CoveConfiguration.parseUpstreamFlag("http://127.0.0.1:5001", key: "--upstream") == (nil, "http://127.0.0.1:5001"))
        let (name, url) = try CoveConfiguration.parseUpstreamFlag("docker.io=https://abc.mirror.aliyuncs.com", key: "--upstream")
        #expect(name == "docker.io" && url == "https://abc.mirror.aliyuncs.com")
        #expect(try CoveConfiguration.parseUpstreamFlag("https://r.example/path?a=b", key: "--upstream") == (nil, "https://r.example/path?a=b"))
        #expect(throws: ConfigError.self) { try CoveConfiguration.parseUpstreamFlag("bad name=https://r.example", key: "--upstream") }
        #expect(throws: ConfigError.self) { try CoveConfiguration.parseUpstreamFlag("docker.io=ftp://r.example", key: "--upstream") }
        var c = CoveConfiguration()
        c.useSingleUpstream(url: url, name: name)
        #expect(!c.ignoresNamespace && c.defaultRegistry == "docker.io")
        c.useSingleUpstream(url: url)
        #expect(c.ignoresNamespace && c.defaultRegistry == "abc.mirror.aliyuncs.com")
    }
}
