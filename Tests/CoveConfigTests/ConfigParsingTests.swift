import CoveConfig
import Foundation
import Testing

@Suite("Configuration file parsing")
struct ConfigParsingTests {
    @Test func emptyDocumentGivesEmbeddedDefaults() throws {
        let c = try CoveConfiguration.parse(yaml: "")
        #expect(c.listen == ListenAddress(host: "0.0.0.0", port: 5000))
        #expect(c.storage == "./cove-data")
        #expect(c.upstream.url == "https://registry-1.docker.io")
        #expect(c.upstream.libraryPrefix)
        #expect(c.cache.tagTTL == 300)
    }

    @Test func exampleFileParsesToTheDocumentedDefaults() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../config.example.yml")
        let text = try String(contentsOf: url, encoding: .utf8)
        let c = try CoveConfiguration.parse(yaml: text)
        let d = try CoveConfiguration.parse(yaml: "")
        #expect(c.listen == d.listen)
        #expect(c.storage == d.storage)
        #expect(c.upstream.url == d.upstream.url)
        #expect(c.cache.tagTTL == d.cache.tagTTL)
        #expect(c.cache.maxConcurrentFills == d.cache.maxConcurrentFills)
        #expect(c.upstream.credentials == nil)
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
          connect_timeout: 2s
          request_timeout: 1m
          low_speed_limit: 10KiB
          low_speed_time: 20s
        cache:
          tag_ttl: 168h
          max_blob_size: 2GiB
          max_concurrent_fills: 4
          fill_retries: 5
        """)
        #expect(c.listen == ListenAddress(host: "::1", port: 5055))
        #expect(c.upstream.url == "http://127.0.0.1:5000")
        #expect(c.upstream.credentials?.username == "alice")
        #expect(c.upstream.credentials?.password == "s3cret")
        #expect(c.upstream.libraryPrefix)
        #expect(c.upstream.requestLimits.connectTimeout == 2)
        #expect(c.upstream.blobLimits.connectTimeout == 2)
        #expect(c.upstream.requestLimits.totalTimeout == 60)
        #expect(c.upstream.blobLimits.lowSpeedLimit == 10240)
        #expect(c.cache.tagTTL == 168 * 3600)
        #expect(c.cache.maxBlobSize == Int64(2_147_483_648))
        #expect(c.cache.maxConcurrentFills == 4)
        #expect(c.cache.fillRetries == 5)
    }

    @Test func passwordFromEnvironment() throws {
        let c = try CoveConfiguration.parse(yaml: "upstream:\n  username: bob\n  password_env: COVE_PW\n", environment: ["COVE_PW": "pw"])
        #expect(c.upstream.credentials?.password == "pw")
    }

    @Test(arguments: [
        ("lisen: 1.2.3.4:5", "lisen"),
        ("upstream:\n  pasword_file: x\n", "upstream.pasword_file"),
        ("cache:\n  tag_tll: 5m\n", "cache.tag_tll"),
        ("cache:\n  tag_ttl: soon\n", "cache.tag_ttl"),
        ("cache:\n  max_blob_size: 12XB\n", "cache.max_blob_size"),
        ("cache:\n  max_concurrent_fills: 0\n", "cache.max_concurrent_fills"),
        ("listen: 5000\n", "listen"),
        ("listen: \"host:99999\"\n", "listen"),
        ("upstream:\n  url: ftp://x\n", "upstream.url"),
        ("upstream:\n  username: a\n", "upstream.username"),
        ("upstream:\n  username: a\n  password_env: NOPE_NOT_SET\n", "upstream.password_env"),
        ("upstream:\n  username: a\n  password_file: /nonexistent/pw\n", "upstream.password_file"),
        ("log_level: loud\n", "log_level"),
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
    }
}
