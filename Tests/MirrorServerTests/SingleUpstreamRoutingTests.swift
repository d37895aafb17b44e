import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// A single unnamed upstream (`--upstream URL`) serves every `?ns=` (containerd's mirror setup sends
/// `ns=docker.io`), while a named one (`--upstream NAME=URL`, `registries:`) still refuses other registries, and
/// `ns` never becomes a host Cove dials.
@Suite("Single upstream routing", .serialized)
struct SingleUpstreamRoutingTests {
    @Test func anUnnamedUpstreamServesWhateverNamespaceContainerdSends() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("library/busybox", tag: "latest")
        let listener = try SwitchableEndpoint(.hang)
        defer { listener.stop() }
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "127.0.0.1:\(up.port)", endpoints: [InProcessCove.endpoint(up.url)])],
                                           ignoresNamespace: true)
        defer { cove.stop() }

        // containerd: HEAD then GET with ?ns=docker.io.
        let head = try await curl("\(cove.url)/v2/library/busybox/manifests/latest?ns=docker.io", method: "HEAD")
        #expect(head.status == 200 && head.headers["docker-content-digest"] == image.digest.description)
        let p = try await pull(cove, "library/busybox", tag: "latest", query: "ns=docker.io")
        #expect(p.ok && p.manifest.body == image.manifest)
        // Any other ns, and none (dockerd, podman): the same upstream and the same cached tag.
        #expect(try await pull(cove, "library/busybox", tag: "latest", query: "ns=ghcr.io").ok)
        #expect(try await pull(cove, "library/busybox", tag: "latest").ok)
        // ns naming a local port is not dialed.
        let local = try await curl("\(cove.url)/v2/library/busybox/manifests/latest?ns=127.0.0.1:\(listener.port)")
        #expect(local.status == 200)
        #expect(listener.accepted == 0)
        #expect(up.count("GET", "/manifests/latest") == 1)
    }

    @Test func aNamedUpstreamStillRefusesOtherRegistriesAndNeverDialsThem() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("library/busybox", tag: "latest")
        let listener = try SwitchableEndpoint(.hang)
        defer { listener.stop() }
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(up.url)])])
        defer { cove.stop() }

        #expect(try await pull(cove, "busybox", tag: "latest", query: "ns=docker.io").ok)
        for ns in ["ghcr.io", "127.0.0.1:\(listener.port)"] {
            let r = try await curl("\(cove.url)/v2/library/busybox/manifests/latest?ns=\(ns)")
            #expect(r.status == 403, "\(ns)")
            #expect(UpstreamAnswerTests.errorJSON(r)?.code == "DENIED")
        }
        #expect(listener.accepted == 0)
    }
}
