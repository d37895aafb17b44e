import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Several endpoints per registry: the configured order, moving on after connect errors, timeouts, 5xx and
/// 429, cool-downs (for endpoint-level faults; see FaultClassificationTests for what is not one), trusted tag
/// resolution, and verification of content from untrusted accelerators.
@Suite("Endpoint failover and cool-down", .serialized)
struct FailoverTests {
    static func cove(_ endpoints: [UpstreamConfiguration], cooldown: Double = 30, configuration: MirrorConfiguration = MirrorConfiguration()) async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: endpoints, cooldown: cooldown)],
                                configuration: configuration)
    }

    @Test func connectionRefusedMovesToTheNextEndpointAndCoolsTheFirstDown() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1", layers: 2)
        let down = "http://127.0.0.1:\(try SwitchableEndpoint.closedPort())"
        // A cool-down far longer than a pull on a loaded machine (one took 32 s), so its start is measurable. A 60 s
        // connect timeout: waiting for it even once would outlast curl's 20 s limit and fail the pull, whatever
        // the machine's speed.
        let cove = try await Self.cove([InProcessCove.endpoint(down, connectTimeout: 60, requestTimeout: 120), InProcessCove.endpoint(up.url)],
                                       cooldown: 120)
        defer { cove.stop() }

        let (p, seconds) = try await timed { try await pull(cove, "team/app", tag: "v1") }
        #expect(p.ok && p.manifest.body == image.manifest, "a refused connection must not wait for the connect timeout")
        #expect(seconds < 60, "a refused connection must not wait for the connect timeout on every request")
        let registry = try #require(cove.registry("registry.test"))
        let cooling = try #require(registry.endpoints[0].coolingFor())
        // Cooled down for the 120 s cooldown, counted from the refusal early in the pull.
        #expect(cooling > 120 - seconds - 2 && cooling <= 120)
        #expect(registry.endpoints[0].lastError?.contains("connection") == true)
        #expect(registry.endpoints[1].coolingFor() == nil)
        #expect(up.count("GET", "/manifests/v1") == 1 && up.count("GET", "/blobs/") == 3)
    }

    @Test func endpointsAreTriedInOrderAndACooledEndpointComesBackAfterItsCoolDown() async throws {
        let seq = SequenceLog()
        let a = try await FaultUpstream.start(label: "a", sequence: seq)
        let b = try await FaultUpstream.start(label: "b", sequence: seq)
        let c = try await FaultUpstream.start(label: "c", sequence: seq)
        defer { a.stop(); b.stop(); c.stop() }
        let image = c.addImage("team/app", tag: "v1", layers: 2)
        a.add(image, as: "team/app", tag: "v1")
        b.add(image, as: "team/app", tag: "v1")
        a.everyRequest.withLock { $0 = .status(503, retryAfter: nil) }
        b.everyRequest.withLock { $0 = .status(500, retryAfter: nil) }
        // A 15 s cool-down: it must outlast the manifest GET and the config GET below, which took over 3 s each
        // on a loaded CI machine (a 3 s cool-down ended before the config GET: a and b were asked again).
        let cove = try await Self.cove([a.url, b.url, c.url].map { InProcessCove.endpoint($0) }, cooldown: 15)
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let (m, seconds) = try await timed { try await curl("\(cove.url)/v2/team/app/manifests/v1") }
        #expect(m.status == 200 && m.body == image.manifest)
        #expect(seq.labels(containing: "/manifests/v1") == ["a", "b", "c"])
        #expect(registry.endpoints[0].coolingFor() != nil && registry.endpoints[1].coolingFor() != nil)
        // The whole configured cool-down, counted from the failures during that GET (however long it took).
        let cooling = registry.endpoints[0].coolingFor() ?? 0
        #expect(cooling > 15 - seconds - 2 && cooling <= 15, "a cools for \(cooling) s after a \(seconds) s GET")
        #expect(registry.endpoints[0].lastError?.contains("503") == true)
        #expect(registry.endpoints[1].lastError?.contains("500") == true)

        // While a and b cool down, only c is asked.
        let config = try await curl("\(cove.url)/v2/team/app/blobs/\(image.configDigest)")
        #expect(config.status == 200 && config.body == image.config)
        #expect(seq.labels(containing: "/blobs/\(image.configDigest)") == ["c"],
                "a cools for \(registry.endpoints[0].coolingFor() ?? 0) s more")

        // a recovers; once its cool-down is over it is first again.
        a.everyRequest.withLock { $0 = nil }
        #expect(await eventually(20) { registry.endpoints[0].coolingFor() == nil })
        let layer = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])")
        #expect(layer.status == 200 && layer.body == image.layers[0])
        #expect(seq.labels(containing: "/blobs/\(image.layerDigests[0])") == ["a"])
        #expect(registry.endpoints[0].coolingFor() == nil && registry.endpoints[0].lastError == nil)
    }

    @Test func notFoundMovesOnWithoutCoolingDown() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let onlyOnB = b.addImage("team/app", tag: "v1")
        let onBoth = a.addImage("team/app", tag: "v2")
        b.add(onBoth, as: "team/app", tag: "v2")
        let cove = try await Self.cove([InProcessCove.endpoint(a.url), InProcessCove.endpoint(b.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("registry.test"))

        let p = try await pull(cove, "team/app", tag: "v1")
        #expect(p.ok && p.manifest.body == onlyOnB.manifest)
        #expect(a.count("GET", "/manifests/v1") == 1 && b.count("GET", "/manifests/v1") == 1)
        // A 404 is an answer, not a failure: a stays usable.
        #expect(registry.endpoints[0].coolingFor() == nil)
        let q = try await pull(cove, "team/app", tag: "v2")
        #expect(q.ok)
        #expect(b.count("GET", "/manifests/v2") == 0 && b.requests("GET", "/blobs/").count == 2)
        #expect(a.requests("GET", "/blobs/").count == 2 + 2)  // two 404s for v1's blobs, v2's two blobs

        // Missing everywhere: the client gets the spec's 404.
        let missing = try await curl("\(cove.url)/v2/team/app/blobs/sha256:\(String(repeating: "7", count: 64))")
        #expect(missing.status == 404 && missing.errorCode == "BLOB_UNKNOWN")
        let noTag = try await curl("\(cove.url)/v2/team/app/manifests/nope")
        #expect(noTag.status == 404 && noTag.errorCode == "MANIFEST_UNKNOWN")
    }

    @Test func whenEveryEndpointIsCoolingTheOneWhoseCoolDownEndsFirstIsTried() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let d1 = a.addBlob(FaultUpstream.randomBytes(1000)), bytes2 = FaultUpstream.randomBytes(1000)
        let d2 = a.addBlob(bytes2)
        b.addBlob(bytes2)
        a.everyRequest.withLock { $0 = .status(502, retryAfter: nil) }
        b.everyRequest.withLock { $0 = .status(504, retryAfter: nil) }
        let cove = try await Self.cove([InProcessCove.endpoint(a.url), InProcessCove.endpoint(b.url)])
        defer { cove.stop() }

        let failed = try await curl("\(cove.url)/v2/x/blobs/\(d1)")
        #expect(failed.status == 503 && failed.errorCode == "UNAVAILABLE")
        // Each endpoint: the blob GET, then a GET /v2/ that fails too (so the 5xx is the endpoint's, not the path's).
        #expect(a.allRequests.map(\.path) == ["/v2/x/blobs/\(d1)", "/v2/"] && b.allRequests.map(\.path) == ["/v2/x/blobs/\(d1)", "/v2/"])
        a.everyRequest.withLock { $0 = nil }
        b.everyRequest.withLock { $0 = nil }
        // Both cool down for 30 s; a registry must not go dark for that long: a (cooled first) is tried.
        let r = try await curl("\(cove.url)/v2/x/blobs/\(d2)")
        #expect(r.status == 200 && r.body == bytes2)
        #expect(a.allRequests.count == 3 && b.allRequests.count == 2)
    }

    @Test func anEndpointThatNeverAnswersTimesOutAndIsSkippedWhileCooling() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        let silent = try SwitchableEndpoint(.hang)
        defer { silent.stop() }
        let cove = try await Self.cove([InProcessCove.endpoint(silent.url, requestTimeout: 1), InProcessCove.endpoint(up.url)])
        defer { cove.stop() }

        let (m, seconds) = try await timed { try await curl("\(cove.url)/v2/team/app/manifests/v1") }
        #expect(m.status == 200 && m.body == image.manifest)
        // Without the 1 s limit the GET would wait the other endpoints' 30 s; the slack is for a loaded machine.
        #expect(seconds >= 0.9 && seconds < 15)
        #expect(silent.accepted == 1)
        // Blob transfers have no total timeout; a silent endpoint would hold them for the low-speed time, but
        // it is cooling down, so it is not asked at all.
        let (b, blobSeconds) = try await timed { try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])") }
        #expect(b.status == 200 && b.body == image.layers[0])
        #expect(blobSeconds < 10)
        #expect(silent.accepted == 1)
    }

    @Test func aBlackHoledEndpointCostsOnlyTheConnectTimeout() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        let hole = try SwitchableEndpoint(.blackHole)
        defer { hole.stop() }
        let cove = try await Self.cove([InProcessCove.endpoint(hole.url, connectTimeout: 1, requestTimeout: 40), InProcessCove.endpoint(up.url)])
        defer { cove.stop() }

        let (p, seconds) = try await timed { try await pull(cove, "team/app", tag: "v1") }
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(seconds >= 0.9 && seconds < 20, "a black hole must cost the 1 s connect timeout, not the 40 s request timeout")
        #expect(hole.accepted == 0)
        let lastError = cove.registry("registry.test")?.endpoints[0].lastError ?? ""
        #expect(lastError.contains("curl 28"), "\(lastError)")  // CURLE_OPERATION_TIMEDOUT
    }

    @Test func aCutBlobTransferResumesOnTheNextEndpoint() async throws {
        let a = try await FaultUpstream.start(label: "a"), b = try await FaultUpstream.start(label: "b")
        defer { a.stop(); b.stop() }
        let bytes = FaultUpstream.randomBytes(2 << 20)
        let digest = a.addBlob(bytes, fault: .drop(after: 1 << 20, times: 1))
        b.addBlob(bytes)
        let cove = try await Self.cove([InProcessCove.endpoint(a.url), InProcessCove.endpoint(b.url)])
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/x/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        #expect(a.requests("GET", "/blobs/").map(\.range) == [nil])
        // b continues where a's transfer was cut (about 1 MiB in), not from zero.
        let resumedAt = b.requests("GET", "/blobs/").first?.range.flatMap { Int($0.dropFirst("bytes=".count).dropLast()) } ?? -1
        #expect(b.requests("GET", "/blobs/").count == 1)
        #expect(resumedAt > 0 && resumedAt <= 1 << 20)
        #expect(await eventually { cove.isCached(digest.description) })
        #expect(cove.registry("registry.test")?.endpoints[0].coolingFor() != nil)
    }

    @Test func untrustedEndpointsServeContentByDigestButNeverResolveTags() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror"), origin = try await FaultUpstream.start(label: "origin")
        defer { mirror.stop(); origin.stop() }
        let image = origin.addImage("team/app", tag: "v1", layers: 2)
        mirror.add(image, as: "team/app", tag: "v1")
        // The accelerator also claims v1 is something else: it must never be asked.
        let forged = mirror.addImage("team/app", tag: "v1")
        let other = origin.addImage("team/app", tag: "v2")
        mirror.add(other, as: "team/app", tag: "v2")
        // Untrusted first in order: it is preferred for everything it may serve.
        let cove = try await Self.cove([InProcessCove.endpoint(mirror.url, resolveTags: false), InProcessCove.endpoint(origin.url)])
        defer { cove.stop() }

        let p = try await pull(cove, "team/app", tag: "v1")
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(p.manifest.headers["docker-content-digest"] != forged.digest.description)
        #expect(mirror.allRequests.filter { $0.path.hasSuffix("/manifests/v1") }.isEmpty)
        #expect(origin.count("GET", "/manifests/v1") == 1)
        #expect(mirror.count("GET", "/blobs/") == 3 && origin.count("GET", "/blobs/") == 0)

        // By digest, the accelerator is fine (Cove verifies what it gets).
        let byDigest = try await curl("\(cove.url)/v2/team/app/manifests/\(other.digest)")
        #expect(byDigest.status == 200 && byDigest.body == other.manifest)
        #expect(mirror.count("GET", "/manifests/\(other.digest)") == 1 && origin.count("GET", "/manifests/\(other.digest)") == 0)
        let head = try await curl("\(cove.url)/v2/team/app/blobs/\(other.layerDigests[0])", method: "HEAD")
        #expect(head.status == 200 && mirror.count("HEAD", "/blobs/") == 1 && origin.count("HEAD", "/blobs/") == 0)

        // Tag lists are tag resolution too.
        let tags = try await curl("\(cove.url)/v2/team/app/tags/list")
        #expect(tags.status == 200)
        #expect(mirror.count("GET", "/tags/list") == 0 && origin.count("GET", "/tags/list") == 1)
    }

    @Test func aRegistryWithOnlyUntrustedEndpointsResolvesNoTags() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror")
        defer { mirror.stop() }
        let image = mirror.addImage("team/app", tag: "v1")
        let cove = try await Self.cove([InProcessCove.endpoint(mirror.url, resolveTags: false)])
        defer { cove.stop() }
        let byTag = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(byTag.status != 200)
        #expect(byTag.body != image.manifest)
        #expect(mirror.count("GET", "/manifests/") == 0 && mirror.count("HEAD", "/manifests/") == 0)
        let byDigest = try await curl("\(cove.url)/v2/team/app/manifests/\(image.digest)")
        #expect(byDigest.status == 200 && byDigest.body == image.manifest)
    }

    @Test func corruptContentFromAnAcceleratorIsNeverServedOrCached() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror"), origin = try await FaultUpstream.start(label: "origin")
        defer { mirror.stop(); origin.stop() }
        let image = origin.addImage("team/app", tag: "v1")
        mirror.add(image, as: "team/app", tag: "v1", blobFault: .corrupt)
        // And a manifest whose bytes do not match the digest it is asked by.
        let genuine = origin.addImage("team/app", tag: "v2")
        mirror.add(genuine, as: "team/app", tag: "v2")
        let tampered = Array(genuine.manifest.dropLast()) + Array(" }".utf8)
        mirror.manifests.withLock { $0["team/app:\(genuine.digest)"] = .init(bytes: tampered, mediaType: MediaType.ociManifest, fault: .none) }
        let cove = try await Self.cove([InProcessCove.endpoint(mirror.url, resolveTags: false), InProcessCove.endpoint(origin.url)])
        defer { cove.stop() }

        let layer = image.layerDigests[0]
        let r = try await curl("\(cove.url)/v2/team/app/blobs/\(layer)")
        #expect(!(r.exitCode == 0 && r.status == 200 && r.body.count == image.layers[0].count))
        #expect(r.body != image.layers[0] || r.exitCode != 0)
        #expect(await eventually(20) { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(layer.description))

        let m = try await curl("\(cove.url)/v2/team/app/manifests/\(genuine.digest)")
        #expect(m.body != tampered)
        if m.status == 200 { #expect(m.body == genuine.manifest) }
        let again = try await curl("\(cove.url)/v2/team/app/manifests/\(genuine.digest)")
        #expect(again.body != tampered)
    }

    /// Content by digest has a trusted source right behind the accelerator: a verification failure on one
    /// endpoint should not fail the pull when the next endpoint has the genuine bytes.
    @Test func verificationFailureOnAnAcceleratorFallsBackToTheNextEndpoint() async throws {
        let mirror = try await FaultUpstream.start(label: "mirror"), origin = try await FaultUpstream.start(label: "origin")
        defer { mirror.stop(); origin.stop() }
        let image = origin.addImage("team/app", tag: "v1")
        mirror.add(image, as: "team/app", tag: "v1", blobFault: .corrupt)
        let cove = try await Self.cove([InProcessCove.endpoint(mirror.url, resolveTags: false), InProcessCove.endpoint(origin.url)])
        defer { cove.stop() }
        let layer = image.layerDigests[0]
        var last: CurlResult?
        for _ in 0..<3 {
            last = try await curl("\(cove.url)/v2/team/app/blobs/\(layer)")
            if last?.status == 200, last?.exitCode == 0, last?.body == image.layers[0] { break }
        }
        #expect(last?.status == 200 && last?.exitCode == 0 && last?.body == image.layers[0],
                "three pulls of a blob the trusted endpoint has all failed; origin saw \(origin.count("GET", "/blobs/")) blob GETs")
        #expect(origin.count("GET", "/blobs/\(layer)") >= 1)

        // The same for a manifest fetched by digest.
        let genuine = origin.addImage("team/app", tag: "v2")
        let tampered = Array(genuine.manifest.dropLast()) + Array(" }".utf8)
        mirror.manifests.withLock { $0["team/app:\(genuine.digest)"] = .init(bytes: tampered, mediaType: MediaType.ociManifest, fault: .none) }
        let m = try await curl("\(cove.url)/v2/team/app/manifests/\(genuine.digest)")
        #expect(m.status == 200 && m.body == genuine.manifest, "\(m.status) \(m.text)")
    }
}
