// Cove behind Cove (issue 7, item 9): a site Cove whose upstream is a regional Cove. Two REAL registries
// (distribution 2.8) hold different images under the same repository name; the upper `cove` serves both
// registries; the lower `cove` points both registries at the upper one with `mirror: true`, so its requests
// carry `?ns=<registry>`. skopeo pulls through the lower Cove by path prefix and must get each registry's own
// image. Without ns=, the upper Cove would route both to its default registry (reg-a.test).
import Foundation
import Testing

@Suite("Cove behind Cove", .serialized, .timeLimit(.minutes(3)))
struct CoveChainTests {
    /// skopeo copies `docker://<cove>/<repo>` into an OCI layout and returns the top manifest digest it wrote.
    private func pulledDigest(_ f: Fixture, from cove: CoveHandle, _ repo: String, into name: String) async throws -> (String?, CommandResult) {
        let dest = f.dir.appendingPathComponent("pulls/\(name)")
        try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
        let r = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                  "docker://\(cove.host)/\(repo)", "oci:\(dest.path):pulled"], authFile: f.authFile, timeout: 60)
        guard r.succeeded, let data = try? Data(contentsOf: dest.appendingPathComponent("index.json")),
              let index = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let manifests = index["manifests"] as? [[String: Any]] else { return (nil, r) }
        return (manifests.first?["digest"] as? String, r)
    }

    @Test("two Coves in a chain route two registries with the same repository name to their own content")
    func twoTiers() async throws {
        let a = try await Fixture(mode: .plain)
        defer { a.shutdown() }
        let b = try await Fixture(mode: .plain)
        defer { b.shutdown() }
        try await a.push("single", to: "team/app")
        try await b.push("index", to: "team/app")
        let imageA = a.image("single"), imageB = b.image("index")
        #expect(imageA.digest != imageB.digest)

        let upper = try await a.startCove(registriesYAML: """
        registries:
          reg-a.test:
            endpoints:
              - url: "\(a.registryURL)"
          reg-b.test:
            endpoints:
              - url: "\(b.registryURL)"
        """)
        let lower = try await a.startCove(registriesYAML: """
        registries:
          reg-a.test:
            endpoints:
              - url: "\(upper.url)"
                mirror: true
          reg-b.test:
            endpoints:
              - url: "\(upper.url)"
                mirror: true
        """)

        let (gotA, ra) = try await pulledDigest(a, from: lower, "reg-a.test/team/app:v1", into: "via-chain-a")
        #expect(gotA == imageA.digest, "reg-a.test through two Coves:\n\(ra.summary)\nlower:\n\(lower.logTail(20))\nupper:\n\(upper.logTail(20))")
        let (gotB, rb) = try await pulledDigest(a, from: lower, "reg-b.test/team/app:v1", into: "via-chain-b")
        #expect(gotB == imageB.digest, "reg-b.test through two Coves:\n\(rb.summary)\nlower:\n\(lower.logTail(20))\nupper:\n\(upper.logTail(20))")

        // Each real registry was asked for its own tag only once the chain routed there.
        #expect(a.registryRequests("GET", pathPrefix: "/v2/team/app/manifests/v1").count == 1)
        #expect(b.registryRequests("GET", pathPrefix: "/v2/team/app/manifests/v1").count == 1)
        // By digest too, with the registries' content kept apart only by the upper Cove's routing.
        let byDigest = try await httpRequest("GET", "\(lower.url)/v2/reg-b.test/team/app/manifests/\(imageB.digest)",
                                             headers: ["Accept: application/vnd.oci.image.index.v1+json"])
        #expect(byDigest.status == 200 && byDigest.header("Docker-Content-Digest") == imageB.digest, "\(byDigest.transcript)")
    }
}
