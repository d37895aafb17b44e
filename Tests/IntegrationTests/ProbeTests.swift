import Foundation
import Testing

/// `cove probe` against a real registry: what it reports, and its exit status.
@Suite("cove probe", .serialized, .timeLimit(.minutes(3)))
struct ProbeTests {
    func writeConfig(_ f: Fixture, _ yaml: String) throws -> String {
        let file = f.dir.appendingPathComponent("probe-\(UUID().uuidString).yml")
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    @Test func reportsEachEndpointAndFailsWhenOneIsUnreachable() async throws {
        let f = try await Fixture(mode: .token)
        defer { f.shutdown() }
        try await f.push("single")
        let dead = try refusedPort()
        let config = try writeConfig(f, """
        registries:
          local.test:
            endpoints:
              - url: \(f.registryURL)
        """)
        let ok = try await runCommand(try coveBinary(), ["probe", "--config", config, "--repository", "single", "--reference", "v1"], timeout: 60)
        #expect(ok.succeeded, "\(ok.summary)")
        let row = try #require(ok.stdoutText.split(separator: "\n").first { $0.contains(f.registryURL) }, "\(ok.stdoutText)")
        #expect(row.contains("HTTP 401"))               // the unauthenticated /v2/ ping is challenged
        #expect(row.contains("bearer ok"))              // and the token flow then works, anonymously
        #expect(row.contains("200 sha256:"))            // the manifest HEAD
        #expect(row.contains("none"))                   // no CDN redirect for blobs on a plain registry

        let withDead = try writeConfig(f, """
        registries:
          local.test:
            endpoints:
              - url: \(f.registryURL)
              - url: http://127.0.0.1:\(dead)
                resolve_tags: false
        """)
        let bad = try await runCommand(try coveBinary(), ["probe", "--config", withDead, "local.test", "--repository", "single"], timeout: 60)
        #expect(bad.status == 1, "\(bad.summary)")
        let deadRow = try #require(bad.stdoutText.split(separator: "\n").first { $0.contains(":\(dead)") }, "\(bad.stdoutText)")
        #expect(deadRow.contains("digest only"))
        #expect(deadRow.contains("no: "))
        let unknown = try await runCommand(try coveBinary(), ["probe", "--config", config, "quay.io"], timeout: 30)
        #expect(!unknown.succeeded && unknown.stderrText.contains("not a configured registry"), "\(unknown.summary)")
    }
}
