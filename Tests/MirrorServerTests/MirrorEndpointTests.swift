import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// An endpoint that is itself a mirror (`mirror: true`: another Cove, a registry accelerator) gets
/// `?ns=<registry>` on every registry API request, as containerd sends it to the mirrors in `hosts.toml`; token
/// realms and CDN redirect targets do not (issue 7, item 9). The two-Cove chain against real registries is in
/// the integration tests.
@Suite("Mirror endpoints get ?ns=", .serialized)
struct MirrorEndpointTests {
    @Test func everyRegistryRequestToAMirrorEndpointCarriesNsAndNothingElseDoes() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: realm) }
        let image = up.addImage("library/busybox", tag: "latest", layers: 2)
        up.addManifest("library/busybox", tag: "older", body: image.manifest)
        up.setFault(image.layerDigests[1], .redirectToCDN)
        var endpoint = InProcessCove.endpoint(up.url)
        endpoint.mirror = true
        // library_prefix still applies: busybox is asked for as library/busybox.
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "reg.example", endpoints: [endpoint], libraryPrefix: true)])
        defer { cove.stop() }

        let p = try await pull(cove, "busybox", tag: "latest")
        #expect(p.ok && p.manifest.body == image.manifest)
        let head = try await curl("\(cove.url)/v2/busybox/blobs/sha256:\(String(repeating: "5", count: 64))", method: "HEAD")
        #expect(head.status == 404)
        let tags = try await curl("\(cove.url)/v2/busybox/tags/list?n=1")
        #expect(tags.status == 200 && tags.text.contains("latest") && !tags.text.contains("older"), "\(tags.text)")

        let requests = up.allRequests
        #expect(requests.contains { $0.method == "HEAD" && $0.path.contains("/blobs/") })
        #expect(requests.contains { $0.path.hasSuffix("/tags/list") })
        for r in requests {
            #expect(r.path.hasPrefix("/v2/library/busybox/") || r.path == "/v2/", "\(r.method) \(r.path)")
            let query = TokenRealm.parseQuery(r.query ?? "")
            #expect(query.filter { $0.0 == "ns" }.map(\.1) == ["reg.example"], "\(r.method) \(r.path)?\(r.query ?? "")")
        }
        // An existing query is extended, not replaced.
        let list = try #require(up.requests("GET", "/tags/list").first)
        #expect(TokenRealm.parseQuery(list.query ?? "").map(\.0) == ["n", "ns"], "\(list.query ?? "")")
        // The token realm and the CDN are other services: no ns there.
        #expect(realm.requests.withLock { $0 }.allSatisfy { !$0.rawQuery.contains("ns=") })
        #expect(!realm.requests.withLock { $0 }.isEmpty)
        #expect(up.cdnRequests.count == 1 && up.cdnRequests.allSatisfy { !($0.query ?? "").contains("ns=") })
    }

    @Test func anOrdinaryEndpointGetsNoNs() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "reg.example", endpoints: [InProcessCove.endpoint(up.url)])])
        defer { cove.stop() }
        let p = try await pull(cove, "team/app", tag: "v1")
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(up.allRequests.allSatisfy { $0.query == nil }, "\(up.allRequests.map { $0.query ?? "" })")
    }
}
