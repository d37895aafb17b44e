import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Request faults are not endpoint faults (issue 7, item 4): only endpoint-level evidence (transport errors,
/// 429, 5xx on `/v2/` or on several paths) cools an endpoint down for every client; a 5xx for one path or a bad
/// object only moves that request on.
@Suite("Fault classification: request faults vs endpoint faults", .serialized)
struct FaultClassificationTests {
    /// Generous limits: nothing here tests a timeout, and on a loaded machine a 2 s `/v2/` probe can run out
    /// and cool a healthy endpoint down.
    static func endpoint(_ url: String, resolveTags: Bool = true) -> UpstreamConfiguration {
        InProcessCove.endpoint(url, resolveTags: resolveTags, connectTimeout: 10, requestTimeout: 20)
    }

    static func cove(_ endpoints: [UpstreamConfiguration]) async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: endpoints, cooldown: 30)])
    }

    /// distribution 2.8 answers 500 for a layer digest asked for as a manifest (a client's mistake): that must
    /// not take the endpoint away from everyone else.
    @Test func aFiveHundredForOnePathDoesNotCoolTheEndpointDown() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let image = a.addImage("team/app", tag: "v1", layers: 2)
        b.add(image, as: "team/app", tag: "v1")
        let cove = try await Self.cove([Self.endpoint(a.url), Self.endpoint(b.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let wrong = try await curl("\(cove.url)/v2/team/app/manifests/\(image.layerDigests[0])")
        #expect(wrong.status == 503 && wrong.errorCode == "UNAVAILABLE", "\(wrong.status) \(wrong.text)")
        #expect(a.count("GET", "/manifests/\(image.layerDigests[0])") == 1 && b.count("GET", "/manifests/\(image.layerDigests[0])") == 1)
        // Each endpoint was asked whether it is alive at all; it is, so the 500 was about that request.
        #expect(a.count("GET", "/v2/") >= 1 && a.requests("GET", "/v2/").contains { $0.path == "/v2/" })
        #expect(registry.endpoints[0].coolingFor() == nil && registry.endpoints[1].coolingFor() == nil)

        // Another client's pull still goes to the first endpoint.
        let p = try await pull(cove, "team/app", tag: "v1")
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(a.count("GET", "/manifests/v1") == 1 && b.count("GET", "/manifests/v1") == 0)
        #expect(b.count("GET", "/blobs/") == 0)

        // The same mistake again: the path is known, no second probe, still no cool-down.
        let probes = a.requests("GET", "/v2/").filter { $0.path == "/v2/" }.count
        _ = try await curl("\(cove.url)/v2/team/app/manifests/\(image.layerDigests[0])")
        #expect(a.requests("GET", "/v2/").filter { $0.path == "/v2/" }.count == probes)
        #expect(registry.endpoints[0].coolingFor() == nil)
    }

    @Test func aWholeEndpointFiveHundredCoolsItDown() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let image = b.addImage("team/app", tag: "v1", layers: 2)
        a.add(image, as: "team/app", tag: "v1")
        a.everyRequest.withLock { $0 = .status(500, retryAfter: nil) }
        let cove = try await Self.cove([Self.endpoint(a.url), Self.endpoint(b.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let m = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(m.status == 200 && m.body == image.manifest)
        // The 500 on the manifest, then 500 on /v2/ too: the endpoint is sick.
        #expect(a.allRequests.map(\.path) == ["/v2/team/app/manifests/v1", "/v2/"])
        let cooling = try #require(registry.endpoints[0].coolingFor())
        #expect(cooling > 20 && cooling <= 30)
        #expect(registry.endpoints[0].lastError?.contains("500") == true)

        let before = a.allRequests.count
        let blob = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])")
        #expect(blob.status == 200 && blob.body == image.layers[0])
        #expect(a.allRequests.count == before)
    }

    /// `/v2/` answers, but content paths keep failing (e.g. the storage backend is down): after
    /// `distinctPathsForEndpointFault` distinct paths the endpoint is skipped.
    @Test func fiveHundredsInSeveralRepositoriesCoolTheEndpointDownButNotInOne() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let images = (1...3).map { b.addImage("team/app\($0)", tag: "v1", layers: 3) }
        for (i, image) in images.enumerated() { a.add(image, as: "team/app\(i + 1)", tag: "v1") }
        let healthy = b.addImage("team/ok", tag: "v1")
        a.add(healthy, as: "team/ok", tag: "v1")
        // One broken repository: every layer of app1 fails, and its tags too.
        a.pathStatus.withLock { for d in images[0].layerDigests { $0["/v2/team/app1/blobs/\(d)"] = 500 } }
        let cove = try await Self.cove([Self.endpoint(a.url), Self.endpoint(b.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        for (i, digest) in images[0].layerDigests.enumerated() {
            let r = try await curl("\(cove.url)/v2/team/app1/blobs/\(digest)")
            #expect(r.status == 200 && r.body == images[0].layers[i])
        }
        #expect(registry.endpoints[0].coolingFor() == nil, "several paths of one repository are one fault")

        // Three repositories failing are endpoint-level evidence.
        a.pathStatus.withLock {
            $0["/v2/team/app2/blobs/\(images[1].layerDigests[0])"] = 500
            $0["/v2/team/app3/blobs/\(images[2].layerDigests[0])"] = 500
        }
        for (n, image) in images.enumerated().dropFirst() {
            let r = try await curl("\(cove.url)/v2/team/app\(n + 1)/blobs/\(image.layerDigests[0])")
            #expect(r.status == 200 && r.body == image.layers[0])
            #expect((registry.endpoints[0].coolingFor() != nil) == (n == 2), "after \(n + 1) failing repositories")
        }
        let before = a.allRequests.count
        let ok = try await curl("\(cove.url)/v2/team/ok/blobs/\(healthy.layerDigests[0])")
        #expect(ok.status == 200 && ok.body == healthy.layers[0])
        #expect(a.allRequests.count == before, "a cooled endpoint is skipped")
    }

    /// A tier that is itself a mirror (another Cove) relays its own upstream's failures as 5xx: those are about
    /// one request each, however many repositories, as long as the tier answers `/v2/`.
    @Test func fiveHundredsFromAMirrorTierDoNotCoolItDown() async throws {
        let tier = try await FaultUpstream.start(label: "tier"), origin = try await FaultUpstream.start(label: "origin")
        defer { tier.stop(); origin.stop() }
        let good = tier.addImage("good/app", tag: "v1")
        tier.pathStatus.withLock { for n in 1...4 { $0["/v2/broken/app\(n)/manifests/v1"] = 502 } }
        var mirror = Self.endpoint(tier.url)
        mirror.mirror = true
        let cove = try await Self.cove([mirror, Self.endpoint(origin.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        for n in 1...4 {
            let r = try await curl("\(cove.url)/v2/broken/app\(n)/manifests/v1")
            #expect(r.status == 503 || r.status == 404)
        }
        #expect(registry.endpoints[0].coolingFor() == nil)
        let p = try await pull(cove, "good/app", tag: "v1")
        #expect(p.ok && p.manifest.body == good.manifest)
        #expect(origin.count("GET", "/good/app/manifests/") == 0, "the tier still serves everything else")
    }

    /// A mirror serving one manifest with the wrong bytes: that manifest comes from the next endpoint, now
    /// and (remembered) next time, while the mirror keeps serving other manifests.
    @Test func aDigestMismatchOnOneManifestDoesNotCoolTheEndpointDown() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror"), origin = try await FaultUpstream.start(label: "origin")
        defer { mirror.stop(); origin.stop() }
        let bad = origin.addImage("team/app", tag: "v1"), good = origin.addImage("team/app", tag: "v2")
        mirror.add(bad, as: "team/app", tag: "v1")
        mirror.add(good, as: "team/app", tag: "v2")
        let tampered = Array(bad.manifest.dropLast()) + Array(" }".utf8)
        mirror.manifests.withLock { $0["team/app:\(bad.digest)"] = .init(bytes: tampered, mediaType: MediaType.ociManifest, fault: .none) }
        let cove = try await Self.cove([Self.endpoint(mirror.url, resolveTags: false), Self.endpoint(origin.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let m = try await curl("\(cove.url)/v2/team/app/manifests/\(bad.digest)")
        #expect(m.status == 200 && m.body == bad.manifest)
        #expect(mirror.count("GET", "/manifests/\(bad.digest)") == 1 && origin.count("GET", "/manifests/\(bad.digest)") == 1)
        #expect(registry.endpoints[0].coolingFor() == nil)
        #expect(registry.endpoints[0].servedBad("team/app@\(bad.digest)"))

        let other = try await curl("\(cove.url)/v2/team/app/manifests/\(good.digest)")
        #expect(other.status == 200 && other.body == good.manifest)
        #expect(mirror.count("GET", "/manifests/\(good.digest)") == 1 && origin.count("GET", "/manifests/\(good.digest)") == 0)
    }

    /// A corrupt blob from an accelerator: the next request for that blob asks the origin first; other blobs
    /// still come from the accelerator.
    @Test func aCorruptBlobIsRememberedForThatBlobOnly() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror"), origin = try await FaultUpstream.start(label: "origin")
        defer { mirror.stop(); origin.stop() }
        let image = origin.addImage("team/app", tag: "v1", layers: 2)
        mirror.add(image, as: "team/app", tag: "v1")
        mirror.setFault(image.layerDigests[0], .corrupt)
        let cove = try await Self.cove([Self.endpoint(mirror.url, resolveTags: false), Self.endpoint(origin.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))
        let bad = image.layerDigests[0]

        let first = try await curl("\(cove.url)/v2/team/app/blobs/\(bad)")
        // The readers of a fill that fails verification are aborted: never a complete wrong (or right) body.
        #expect(first.exitCode != 0 || first.status != 200)
        #expect(await eventually(20) { registry.endpoints[0].servedBad(bad.description) })
        #expect(registry.endpoints[0].coolingFor() == nil)

        let second = try await curl("\(cove.url)/v2/team/app/blobs/\(bad)")
        #expect(second.status == 200 && second.exitCode == 0 && second.body == image.layers[0])
        #expect(mirror.count("GET", "/blobs/\(bad)") == 1 && origin.count("GET", "/blobs/\(bad)") == 1)

        let other = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[1])")
        #expect(other.status == 200 && other.body == image.layers[1])
        #expect(mirror.count("GET", "/blobs/\(image.layerDigests[1])") == 1 && origin.count("GET", "/blobs/\(image.layerDigests[1])") == 0)
    }

    @Test func tooManyRequestsCoolsTheEndpointDown() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let image = b.addImage("team/app", tag: "v1")
        a.add(image, as: "team/app", tag: "v1")
        a.everyRequest.withLock { $0 = .status(429, retryAfter: "20") }
        let cove = try await Self.cove([Self.endpoint(a.url), Self.endpoint(b.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let m = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(m.status == 200 && m.body == image.manifest)
        // No /v2/ probe for a 429: it is endpoint-level evidence by itself.
        #expect(a.allRequests.map(\.path) == ["/v2/team/app/manifests/v1"])
        let cooling = try #require(registry.endpoints[0].coolingFor())
        #expect(cooling > 15 && cooling <= 20)
        let blob = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])")
        #expect(blob.status == 200 && a.allRequests.count == 1)
    }
}
