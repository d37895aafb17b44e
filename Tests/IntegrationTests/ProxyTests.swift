import Foundation
import Testing

/// Upstream traffic honours the standard proxy variables (libcurl reads `http_proxy`, `HTTPS_PROXY`,
/// `NO_PROXY`); checked with a real forward proxy between Cove and a real registry.
@Suite("Upstream proxy settings", .serialized, .timeLimit(.minutes(3)))
struct ProxyTests {
    @Test func upstreamRequestsGoThroughTheProxyUnlessNoProxyExcludesTheHost() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single")
        let img = f.image("single")
        let port = try freePort()
        let proxy = try ProcessHandle(name: "proxy", executable: "python3",
                                      arguments: [fixturesDirectory().appendingPathComponent("http_proxy.py").path, "--port", String(port)],
                                      logDirectory: f.logDirectory)
        defer { proxy.stop() }
        try await waitForHTTP("http://127.0.0.1:\(port)/", timeout: 20, process: proxy)
        func proxied() -> [String] {
            ((try? String(contentsOf: proxy.stdoutURL, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
                .filter { $0.contains(f.registryURL + "/v2/single/manifests/") }
        }

        let viaProxy = try await f.startCove(environment: ["http_proxy": "http://127.0.0.1:\(port)", "NO_PROXY": "", "no_proxy": ""])
        let r = try await httpRequest("GET", "\(viaProxy.url)/v2/single/manifests/\(img.tag)")
        #expect(r.status == 200, "\(r.transcript)\n\(viaProxy.logTail())")
        #expect(r.header("Docker-Content-Digest") == img.digest)
        #expect(proxied().count == 1, "proxy log: \(proxied())")

        let direct = try await f.startCove(environment: ["http_proxy": "http://127.0.0.1:\(port)", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"])
        let d = try await httpRequest("GET", "\(direct.url)/v2/single/manifests/\(img.tag)")
        #expect(d.status == 200, "\(d.transcript)\n\(direct.logTail())")
        #expect(proxied().count == 1, "NO_PROXY=127.0.0.1 must bypass the proxy: \(proxied())")
    }
}
