import Foundation
import Logging
import Mirror
import MirrorServer
import OCI
import Testing
import Upstream

/// `/healthz`, `/readyz`, the status page `/` and the access log, through the real stack.
@Suite("Operator endpoints")
struct OperatorEndpointTests {
    @Test func healthAndReadinessAnswer200AndAreNotAccessLogged() async throws {
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint("http://127.0.0.1:1")])],
                                           logs: logs)
        defer { cove.stop() }
        let health = try await curl("\(cove.url)/healthz")
        #expect(health.status == 200 && health.text == "ok\n")
        let ready = try await curl("\(cove.url)/readyz")
        #expect(ready.status == 200, "\(ready.text)")
        #expect(ready.text.contains(#""ready":true"#))
        #expect(try await curl("\(cove.url)/readyz", method: "HEAD").status == 200)
        let base = try await curl("\(cove.url)/v2/")
        #expect(base.status == 200)
        #expect(await eventually(20) { logs.all.contains { $0.message == "GET /v2/ 200" } })
        #expect(!logs.all.contains { $0.message.contains("/healthz") || $0.message.contains("/readyz") })
        // Other non-/v2 paths keep their 404 JSON envelope.
        let other = try await curl("\(cove.url)/nothing-here")
        #expect(other.status == 404 && other.errorCode == "UNSUPPORTED")
    }

    @Test func readinessFailsWhenStorageIsNotWritableAndDuringShutdown() async throws {
        let cove = try await InProcessCove(upstream: "http://127.0.0.1:1")
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/readyz").status == 200)
        // tmp/ replaced by a regular file: creating a file below it fails with ENOTDIR, for root too
        // (a chmod would not stop root).
        let tmp = cove.storage.appendingPathComponent("tmp")
        let aside = cove.storage.appendingPathComponent("tmp.aside")
        try FileManager.default.moveItem(at: tmp, to: aside)
        try Data("not a directory".utf8).write(to: tmp)
        let broken = try await curl("\(cove.url)/readyz")
        #expect(broken.status == 503)
        let json = try JSONSerialization.jsonObject(with: Data(broken.body)) as? [String: Any]
        let checks = json?["checks"] as? [String: String]
        #expect(json?["ready"] as? Bool == false)
        #expect(checks?["storage"]?.contains("tmp/") == true, "\(broken.text)")
        #expect(checks?["index"] == "ok" && checks?["shutdown"] == "ok")
        #expect(try await curl("\(cove.url)/healthz").status == 200)  // alive all the same
        // Repaired: ready again.
        try FileManager.default.removeItem(at: tmp)
        try FileManager.default.moveItem(at: aside, to: tmp)
        #expect(try await curl("\(cove.url)/readyz").status == 200)
        // Shutdown begun: 503 naming it, at once.
        cove.readiness.beginShutdown()
        let stopping = try await curl("\(cove.url)/readyz")
        #expect(stopping.status == 503 && stopping.text.contains(#""shutdown":"shutting down""#), "\(stopping.text)")
    }

    @Test func accessLogLinesCarryOutcomeBytesAndUpstream() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1", layers: 1, layerSize: 40_000)
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                           logs: logs)
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        #expect(await eventually(10) { cove.isCached(image.layerDigests[0].description) })
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        let manifestPath = "/v2/team/app/manifests/v1"
        let layerPath = "/v2/team/app/blobs/\(image.layerDigests[0])"
        var access: [LogCapture.Record] = []
        #expect(await eventually(20) {
            access = logs.all.filter { $0.level == .info && ($0.message.hasPrefix("GET \(manifestPath) ") || $0.message.hasPrefix("GET \(layerPath) ")) }
            return access.count == 4
        }, "\(access.map(\.text))")
        guard access.count == 4 else { return }
        let manifests = access.filter { $0.message.contains("/manifests/") }
        let layers = access.filter { $0.message.contains("/blobs/") }
        #expect(manifests.map { $0.metadata["cache"] } == ["miss", "hit"])
        #expect(manifests[0].metadata["upstream"] == "127.0.0.1:\(up.port)")
        #expect(manifests[1].metadata["upstream"] == "-")
        #expect(manifests.allSatisfy { $0.metadata["bytes"] == "\(image.manifest.count)" && $0.metadata["status"] == "200" })
        #expect(layers.map { $0.metadata["cache"] } == ["miss", "hit"])
        #expect(layers.map { $0.metadata["upstream"] } == ["127.0.0.1:\(up.port)", "-"])
        #expect(layers.allSatisfy { $0.metadata["bytes"] == "40000" })
        #expect(access.allSatisfy { Double($0.metadata["ms"] ?? "") != nil })
        // Who asked: the connection's peer; no user without `auth`.
        #expect(access.allSatisfy { $0.metadata["client"] == "127.0.0.1" && $0.metadata["user"] == "-" }, "\(access.map(\.text))")
        // A 404 for a name the upstream does not have is not a pull: the status page's top list stays real.
        #expect(try await curl("\(cove.url)/v2/team/no-such-app/manifests/v1").status == 404)
        #expect(cove.mirror.metrics.topRepositories().map(\.repository) == ["upstream.test/team/app"])
        // HEAD: logged with 0 bytes and its outcome.
        #expect(try await curl("\(cove.url)\(layerPath)", method: "HEAD").status == 200)
        #expect(await eventually(20) {
            logs.all.contains { $0.message == "HEAD \(layerPath) 200" && $0.metadata["bytes"] == "0" && $0.metadata["cache"] == "hit" }
        })
    }

    @Test func statusPageShowsNumbersAfterAPull() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.pullLimit.withLock { $0 = .init(limit: 100) }
        let image = up.addImage("team/app", tag: "v1", layers: 2, layerSize: 30_000)
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(maxSize: 10 << 20))
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        #expect(await eventually(10) { image.blobs.allSatisfy { cove.isCached($0.0.description) } })
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        let page = try await curl("\(cove.url)/")
        #expect(page.status == 200)
        #expect(page.headers["content-type"] == "text/html; charset=utf-8")
        let html = page.text
        #expect(html.contains("<meta http-equiv=\"refresh\""))
        #expect(!html.contains("<script"))
        #expect(html.contains("of 10.0 MiB limit"))
        #expect(html.contains("4 hits, 4 misses since start"), "\(html)")
        #expect(html.contains("50.0%"))
        #expect(html.contains("<code>upstream.test/team/app</code></td><td class=\"n\">2</td>"))
        #expect(html.contains(up.url))
        #expect(html.contains(" of 100 per 6h 0m"))
        let head = try await curl("\(cove.url)/", method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == "\(page.body.count)")
    }

    @Test func statusPageEscapesWhatRequestsAndUpstreamsSend() async throws {
        // Repository names are validated at the edge (no `<` can get in), so the escaping is checked where
        // hostile text does reach the page: an upstream's error message, and the renderer itself.
        let hostile = "<script>alert('x')</script>&\""
        let status = MirrorStatus(
            cacheBytes: 1536, maxSize: nil, freeBytes: 1 << 30, minFreeBytes: 1 << 20, hits: 3, misses: 1,
            registries: [.init(name: "r<e>g", endpoints: [.init(label: "h:1", url: "http://h:1/\(hostile)", coolingFor: 30, lastError: hostile, rateLimit: nil)])],
            fills: [.init(digest: "sha256:<x>", bytes: 512, size: 2048)],
            topRepositories: [(repository: "docker.io/\(hostile)", pulls: 7)], offline: false)
        let html = StatusPage.render(status, startedAt: Date())
        #expect(!html.contains("<script>"))
        #expect(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"))
        #expect(html.contains("r&lt;e&gt;g"))
        #expect(html.contains("sha256:&lt;x&gt;"))
        #expect(html.contains("512 B / 2.0 KiB (25.0%)"))
        #expect(html.contains("cooled down</span> until"))
        #expect(html.contains("75.0%"))  // hit ratio 3 of 4
    }
}
