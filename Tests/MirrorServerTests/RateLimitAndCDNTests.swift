import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Docker Hub's pull limit (rate-limit headers, 429 with `Retry-After`) and its CDN redirects.
@Suite("Rate limits and CDN redirects", .serialized)
struct RateLimitAndCDNTests {
    static func dockerIO(_ endpoints: [UpstreamConfiguration], cooldown: Double = 1, tagTTL: Double = 0.5) async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: endpoints, cooldown: cooldown)],
                                configuration: MirrorConfiguration(tagTTL: tagTTL))
    }

    @Test func rateLimitHeadersAreKeptPerEndpointLatestFirst() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), mirror = try await FaultUpstream.start(label: "mirror")
        defer { hub.stop(); mirror.stop() }
        hub.pullLimit.withLock { $0 = .init(limit: 10, source: "203.0.113.7") }
        let latest = hub.addImage("library/busybox", tag: "latest")
        hub.addImage("library/busybox", tag: "1.36")
        mirror.add(latest, as: "library/busybox", tag: "latest")
        let cove = try await Self.dockerIO([InProcessCove.endpoint(mirror.url, resolveTags: false), InProcessCove.endpoint(hub.url)])
        defer { cove.stop() }
        let registry = try #require(cove.registry("docker.io"))
        #expect(registry.endpoints[1].client.rateLimit == nil)

        let started = Date()
        #expect(try await pull(cove, "busybox", tag: "latest").ok)
        let status = try #require(registry.endpoints[1].client.rateLimit)
        #expect(status.limit == 10 && status.remaining == 9 && status.window == 21600)
        #expect(status.source == "203.0.113.7")
        #expect(status.observedAt >= started.addingTimeInterval(-1))
        // The accelerator sent no such headers: its status stays empty.
        #expect(mirror.count("GET", "/blobs/") == 2)
        #expect(registry.endpoints[0].client.rateLimit == nil)

        _ = try await curl("\(cove.url)/v2/busybox/manifests/1.36")
        #expect(registry.endpoints[1].client.rateLimit?.remaining == 8)
        #expect(registry.endpoints[0].client.rateLimit == nil)
    }

    @Test func anExhaustedPullLimitAnswers429WithRetryAfterAndServesStale() async throws {
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.pullLimit.withLock { $0 = .init(limit: 2, retryAfter: "20") }
        let a = hub.addImage("library/busybox", tag: "a")
        hub.addImage("library/busybox", tag: "b")
        hub.addImage("library/busybox", tag: "c")
        hub.addImage("library/busybox", tag: "d")
        // Cool-down 1 s, Retry-After 20 s: the longer one must win. The requests below, which must all fall inside
        // Retry-After, took more than 8 s on a loaded CI machine.
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url)], cooldown: 1)
        defer { cove.stop() }
        let registry = try #require(cove.registry("docker.io"))

        #expect(try await pull(cove, "busybox", tag: "a").ok)
        #expect(try await pull(cove, "busybox", tag: "b").ok)
        let limited = try await curl("\(cove.url)/v2/busybox/manifests/c")
        #expect(limited.status == 429 && limited.errorCode == "TOOMANYREQUESTS")
        #expect(limited.headers["retry-after"] == "20")
        #expect(registry.endpoints[0].client.rateLimit?.remaining == 0)
        let cooling = try #require(registry.endpoints[0].coolingFor())
        #expect(cooling > 12 && cooling <= 20)

        // While Retry-After runs, nothing goes upstream; clients get 429 with the time left.
        let sent = hub.allRequests.count
        let blocked = try await curl("\(cove.url)/v2/busybox/manifests/d")
        #expect(blocked.status == 429 && blocked.errorCode == "TOOMANYREQUESTS")
        let retry = Int(blocked.headers["retry-after"] ?? "") ?? -1
        #expect(retry >= 1 && retry <= 20)
        // A cached tag past its TTL is served stale instead of failing; cached blobs are served as always.
        try await Task.sleep(for: .milliseconds(600))
        let stale = try await curl("\(cove.url)/v2/busybox/manifests/a")
        #expect(stale.status == 200 && stale.body == a.manifest && stale.headers["x-cove-cache"] == "stale")
        let blob = try await curl("\(cove.url)/v2/busybox/blobs/\(a.layerDigests[0])")
        #expect(blob.status == 200 && blob.body == a.layers[0])
        // Past the 1 s cool-down but inside Retry-After: still nothing sent.
        try await Task.sleep(for: .milliseconds(800))
        #expect(try await curl("\(cove.url)/v2/busybox/manifests/d").status == 429)
        #expect(hub.allRequests.count == sent)

        // The window resets upstream; after Retry-After, pulls go through again.
        hub.pullLimit.withLock { $0?.used = 0 }
        #expect(await eventually(25) { registry.endpoints[0].coolingFor() == nil })
        let p = try await pull(cove, "busybox", tag: "c")
        #expect(p.ok)
        #expect(registry.endpoints[0].client.rateLimit?.remaining == 1)
    }

    @Test func aTagThatMovedIsServedStaleWhenTheLimitStopsTheNewManifest() async throws {
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.pullLimit.withLock { $0 = .init(limit: 1, retryAfter: "30") }
        let old = hub.addImage("library/busybox", tag: "latest")
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url)])
        defer { cove.stop() }
        #expect(try await pull(cove, "busybox", tag: "latest").ok)
        let new = hub.addImage("library/busybox", tag: "latest")
        try await Task.sleep(for: .milliseconds(600))
        // HEAD (free) sees the new digest; the GET for it is refused: the old manifest is served, marked stale.
        let r = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(r.status == 200 && r.body == old.manifest && r.headers["x-cove-cache"] == "stale")
        #expect(hub.count("HEAD", "/manifests/latest") == 1)
        #expect(hub.requests("GET", "/manifests/latest").count == 2)
        #expect(r.headers["docker-content-digest"] != new.digest.description)
        let cooling = try #require(cove.registry("docker.io")?.endpoints[0].coolingFor())
        #expect(cooling > 20)
    }

    /// Docker Hub's pull-limit 429 carries rate-limit headers but not always `Retry-After`; Cove's own 429 must
    /// still tell the client when to come back (the cool-down it applies).
    @Test func a429WithoutRetryAfterStillAnswersWithRetryAfter() async throws {
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.everyRequest.withLock { $0 = .status(429, retryAfter: nil) }
        hub.addImage("library/busybox", tag: "latest")
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url)], cooldown: 5)
        defer { cove.stop() }
        let first = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(first.status == 429 && first.errorCode == "TOOMANYREQUESTS")
        let retry = Int(first.headers["retry-after"] ?? "")
        #expect(retry != nil && retry! >= 1 && retry! <= 5, "first 429 carries Retry-After \(first.headers["retry-after"] ?? "nil")")
        let second = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(second.status == 429 && Int(second.headers["retry-after"] ?? "") != nil)
        #expect(hub.allRequests.count == 1)
    }

    @Test func aRateLimitedEndpointIsSkippedForItsRetryAfterWhileAnotherServes() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), second = try await FaultUpstream.start(label: "second")
        defer { hub.stop(); second.stop() }
        // Retry-After as an HTTP date, 4 s from now.
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        hub.everyRequest.withLock { $0 = .status(429, retryAfter: f.string(from: Date().addingTimeInterval(4))) }
        let image = second.addImage("library/busybox", tag: "latest")
        hub.add(image, as: "library/busybox", tag: "latest")
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url), InProcessCove.endpoint(second.url)], cooldown: 1)
        defer { cove.stop() }
        let registry = try #require(cove.registry("docker.io"))

        let m = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(m.status == 200 && m.body == image.manifest)
        let cooling = try #require(registry.endpoints[0].coolingFor())
        #expect(cooling > 2 && cooling <= 4)
        hub.everyRequest.withLock { $0 = nil }
        try await Task.sleep(for: .milliseconds(1200))
        // The 1 s cool-down is over, the Retry-After is not: blobs still come from the second endpoint.
        let p = try await pull(cove, "busybox", tag: "latest")
        #expect(p.ok)
        #expect(hub.count("GET", "/blobs/") == 0 && second.count("GET", "/blobs/") == 2)
    }

    @Test func redirectedBlobsNeverCarryAuthorizationToTheCDN() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        realm.settings.withLock { $0.users = ["alice": "s3cret-pw"] }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.bearer.withLock { $0 = .init(realm: realm) }
        let images = (0..<3).map { hub.addImage("library/img\($0)", tag: "latest", layers: 2, layerSize: 300_000, blobFault: .redirectToCDN) }
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url, credentials: AuthRealmTests.alice)])
        defer { cove.stop() }

        let results = try await withThrowingTaskGroup(of: PullResult.self) { group in
            for i in 0..<3 { group.addTask { try await pull(cove, "img\(i)", tag: "latest") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 3 && results.allSatisfy(\.ok))
        let layerGets = hub.requests("GET", "/blobs/").filter { r in images.contains { $0.layerDigests.contains { r.path.hasSuffix($0.description) } } }
        #expect(layerGets.count >= 6)
        #expect(layerGets.allSatisfy { $0.authorization?.hasPrefix("Bearer ") == true })
        #expect(hub.cdnRequests.count == 6)
        #expect(hub.cdnRequests.allSatisfy { $0.authorization == nil })
    }

    @Test func aResumedBlobAsksTheRegistryForAFreshRedirect() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.bearer.withLock { $0 = .init(realm: realm) }
        let bytes = FaultUpstream.randomBytes(2 << 20)
        let digest = hub.addBlob(bytes, fault: .redirectToCDN)
        // The CDN cuts the first transfer half way; its URLs are signed and single-use.
        hub.setCDNFault(digest, .drop(after: 1 << 20, times: 1))
        let cove = try await Self.dockerIO([InProcessCove.endpoint(hub.url)])
        defer { cove.stop() }

        let r = try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        #expect(await eventually { cove.isCached(digest.description) })
        // The resume goes back to the registry (Range from where the cut left off), which redirects again.
        let origin = hub.requests("GET", "/blobs/").filter { $0.tokenCheck == .valid }
        #expect(origin.count == 2 && origin.first?.range == nil)
        let resumedAt = origin.last?.range.flatMap { Int($0.dropFirst("bytes=".count).dropLast()) } ?? -1
        #expect(resumedAt > 0 && resumedAt <= 1 << 20, "\(origin.map(\.range))")
        let cdn = hub.cdnRequests
        #expect(cdn.map(\.range) == [nil, "bytes=\(resumedAt)-"])
        // Two different single-use URLs: the first redirect was not kept and replayed.
        #expect(cdn.count == 2 && cdn[0].query != cdn[1].query)
        #expect(cdn.allSatisfy { $0.authorization == nil })
    }
}
