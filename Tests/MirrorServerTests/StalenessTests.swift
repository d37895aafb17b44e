import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Tag freshness: TTL, HEAD revalidation, stale-if-error with the upstream down, hung, black-holed, failing,
/// rate limited or refusing auth; digests that never need the upstream; offline mode.
@Suite("Tag staleness and offline mode", .serialized)
struct StalenessTests {
    static let ttl = 3.0

    /// How an upstream can fail after Cove cached a tag.
    enum Failure: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case killed, refused, hung, status500, status503, status429, authFails
        var testDescription: String { rawValue }
    }

    @Test func aCachedTagIsTrustedForItsTTLThenRevalidatedWithHEAD() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let v1 = up.addImage("team/app", tag: "v1")
        // Two requests must fit inside one TTL; on a loaded CI machine two curls took longer than 3 s.
        let ttl = 10.0
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                           configuration: MirrorConfiguration(tagTTL: ttl))
        defer { cove.stop() }
        let url = "\(cove.url)/v2/team/app/manifests/v1"

        #expect(try await curl(url).body == v1.manifest)
        #expect(up.count("GET", "/manifests/v1") == 1)
        let fresh = try await curl(url)
        #expect(fresh.status == 200 && fresh.body == v1.manifest && fresh.headers["x-cove-cache"] == nil)
        #expect(up.allRequests.count == 1)

        // After the TTL: one HEAD, no GET (the digest did not change), and the tag is fresh again.
        try await Task.sleep(for: .milliseconds(Int(ttl * 1000) + 150))
        let revalidated = try await curl(url)
        #expect(revalidated.status == 200 && revalidated.body == v1.manifest)
        #expect(revalidated.headers["x-cove-cache"] == nil && revalidated.headers["warning"] == nil)
        #expect(up.count("HEAD", "/manifests/v1") == 1 && up.count("GET", "/manifests/v1") == 1)
        _ = try await curl(url, method: "HEAD")
        #expect(up.allRequests.count == 2)

        // The tag moves upstream: after the TTL, HEAD sees a new digest and only then Cove GETs it.
        let v2 = up.addImage("team/app", tag: "v1")
        try await Task.sleep(for: .milliseconds(Int(ttl * 1000) + 150))
        let moved = try await curl(url, method: "HEAD")
        #expect(moved.status == 200 && moved.headers["docker-content-digest"] == v2.digest.description)
        #expect(moved.headers["content-length"] == String(v2.manifest.count))
        #expect(up.count("HEAD", "/manifests/v1") == 2 && up.count("GET", "/manifests/v1") == 2)
        #expect(try await curl(url).body == v2.manifest)
    }

    @Test(arguments: Failure.allCases)
    func aCachedTagIsServedStaleWhenTheUpstreamFails(_ failure: Failure) async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: realm) }
        let image = up.addImage("library/busybox", tag: "latest", layers: 2)
        let relay = try SwitchableEndpoint(.forward(up.port))
        defer { relay.stop() }
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(relay.url, connectTimeout: 1, requestTimeout: 20)]),
        ], configuration: MirrorConfiguration(tagTTL: Self.ttl))
        defer { cove.stop() }
        // Caching the image is the set-up, not the subject: a loaded machine can miss a deadline once.
        // The revalidation of a cached tag is bounded by the 1 s connect timeout, not the 20 s request timeout:
        // the time bounds below leave room for a loaded machine and still fail if it waited for the latter.
        var first = try await pull(cove, "busybox", tag: "latest")
        for _ in 0..<3 where !first.ok { first = try await pull(cove, "busybox", tag: "latest") }
        #expect(first.ok)

        switch failure {
        case .killed: up.stop()
        case .refused: try relay.set(.refuse)
        case .hung: try relay.set(.hang)
        case .status500: up.everyRequest.withLock { $0 = .status(500, retryAfter: nil) }
        case .status503: up.everyRequest.withLock { $0 = .status(503, retryAfter: "1") }
        case .status429: up.everyRequest.withLock { $0 = .status(429, retryAfter: "60") }
        case .authFails:
            // Every token is revoked and the realm is broken: the upstream can only answer 401.
            realm.issued.withLock { $0.removeAll() }
            realm.settings.withLock { $0.failWith = 500 }
        }
        try await Task.sleep(for: .milliseconds(Int(Self.ttl * 1000) + 150))
        let upstreamBlobGets = up.count("GET", "/blobs/")

        let (stale, seconds) = try await timed { try await curl("\(cove.url)/v2/busybox/manifests/latest") }
        #expect(stale.status == 200 && stale.body == image.manifest)
        #expect(stale.headers["docker-content-digest"] == image.digest.description)
        #expect(stale.headers["x-cove-cache"] == "stale")
        #expect(stale.headers["warning"]?.hasPrefix("110 ") == true)
        #expect(seconds < 10, "stale answer took \(seconds) s")
        // containerd resolves with HEAD: same answer without a body.
        let head = try await curl("\(cove.url)/v2/busybox/manifests/latest", method: "HEAD")
        #expect(head.status == 200 && head.headers["x-cove-cache"] == "stale")
        #expect(head.headers["content-length"] == String(image.manifest.count))

        // The rest of the pull is by digest and needs no upstream at all.
        let (blobs, blobSeconds) = try await timed { () async throws -> [CurlResult] in
            var out: [CurlResult] = []
            for (digest, _) in image.blobs { out.append(try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")) }
            out.append(try await curl("\(cove.url)/v2/busybox/manifests/\(image.digest)"))
            return out
        }
        #expect(zip(blobs, image.blobs.map(\.1) + [image.manifest]).allSatisfy { $0.status == 200 && $0.body == $1 && $0.headers["x-cove-cache"] == nil })
        #expect(blobSeconds < 10, "cached content must not wait for the failed upstream")
        #expect(up.count("GET", "/blobs/") == upstreamBlobGets)
    }

    @Test func aBlackHoledUpstreamHoldsACachedPullNoLongerThanTheConnectTimeout() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        _ = up.addImage("library/busybox", tag: "latest", layers: 2)
        let relay = try SwitchableEndpoint(.forward(up.port))
        defer { relay.stop() }
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(relay.url, connectTimeout: 1, requestTimeout: 30)]),
        ], configuration: MirrorConfiguration(tagTTL: Self.ttl))
        defer { cove.stop() }
        #expect(try await pull(cove, "busybox", tag: "latest").ok)
        // The upstream goes away (its open connections die with it), then its address black-holes.
        try relay.set(.refuse)
        try relay.set(.blackHole)
        try await Task.sleep(for: .milliseconds(Int(Self.ttl * 1000) + 150))

        for round in 0..<2 {
            let (p, seconds) = try await timed { try await pull(cove, "busybox", tag: "latest") }
            #expect(p.ok && p.manifest.headers["x-cove-cache"] == "stale", "round \(round)")
            #expect(seconds < 12, "round \(round): a cached pull took \(seconds) s with a 1 s connect timeout (request timeout 30 s)")
        }
    }

    /// The same black hole, but it appears while Cove still has an idle connection to the upstream from a pull
    /// a moment ago (the usual case: a busy mirror talks to Docker Hub all the time).
    @Test func aBlackHoleBehindAPooledConnectionHoldsACachedPullNoLongerThanTheConnectTimeout() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("library/busybox", tag: "latest")
        let relay = try SwitchableEndpoint(.forward(up.port))
        defer { relay.stop() }
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(relay.url, connectTimeout: 1, requestTimeout: 30)]),
        ], configuration: MirrorConfiguration(tagTTL: Self.ttl))
        defer { cove.stop() }
        #expect(try await pull(cove, "busybox", tag: "latest").ok)
        try relay.set(.blackHole)
        try await Task.sleep(for: .milliseconds(Int(Self.ttl * 1000) + 150))
        let (m, seconds) = try await timed { try await curl("\(cove.url)/v2/busybox/manifests/latest") }
        #expect(m.status == 200 && m.headers["x-cove-cache"] == "stale")
        #expect(seconds < 12, "a cached tag took \(seconds) s with a 1 s connect timeout (request timeout 30 s)")
    }

    @Test func digestsAlreadyCachedNeverContactTheUpstream() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1", layers: 2)
        let relay = try SwitchableEndpoint(.forward(up.port))
        defer { relay.stop() }
        // A zero TTL: tags always revalidate, digests never do.
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(relay.url)])],
                                           configuration: MirrorConfiguration(tagTTL: 0))
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        let requests = up.allRequests.count, connections = relay.accepted
        for _ in 0..<2 {
            let m = try await curl("\(cove.url)/v2/team/app/manifests/\(image.digest)")
            #expect(m.status == 200 && m.body == image.manifest)
            let mh = try await curl("\(cove.url)/v2/team/app/manifests/\(image.digest)", method: "HEAD")
            #expect(mh.status == 200 && mh.headers["docker-content-digest"] == image.digest.description)
            for (digest, bytes) in image.blobs {
                let b = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)")
                #expect(b.status == 200 && b.body == bytes)
                let h = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)", method: "HEAD")
                #expect(h.status == 200 && h.headers["content-length"] == String(bytes.count))
                let r = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)", headers: ["Range: bytes=1-3"])
                #expect(r.status == 206 && r.body == Array(bytes[1...3]))
            }
            // Also under another repository name and another route: content is content.
            let other = try await curl("\(cove.url)/v2/other/name/blobs/\(image.layerDigests[0])")
            #expect(other.status == 200 && other.body == image.layers[0])
            try relay.set(.refuse)
        }
        #expect(up.allRequests.count == requests)
        #expect(relay.accepted == connections)
    }

    @Test func aTagTheUpstreamNoLongerHasIsNotServedStale() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("team/app", tag: "v1")
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                           configuration: MirrorConfiguration(tagTTL: Self.ttl))
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").status == 200)
        _ = up.manifests.withLock { $0.removeValue(forKey: "team/app:v1") }
        try await Task.sleep(for: .milliseconds(Int(Self.ttl * 1000) + 150))
        let gone = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(gone.status == 404 && gone.errorCode == "MANIFEST_UNKNOWN")
    }

    @Test func offlineModeServesTheCacheAndNeverContactsAnyUpstream() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let busybox = up.addImage("library/busybox", tag: "latest")
        let app = up.addImage("team/app", tag: "v1")
        let notPulled = up.addImage("team/app", tag: "v2")
        let relay = try SwitchableEndpoint(.forward(up.port))
        defer { relay.stop() }
        let registries = [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(relay.url)])]
        let storage: URL
        do {
            let online = try await InProcessCove(registries: registries)
            #expect(try await pull(online, "busybox", tag: "latest").ok)
            #expect(try await pull(online, "team/app", tag: "v1").ok)
            online.stop(keepStorage: true)
            storage = online.storage
        }
        let requests = up.allRequests.count, connections = relay.accepted

        // Cached tags are old (TTL 0) but offline serves them anyway. (The first Cove may need a moment to let
        // go of the storage.)
        var opened: InProcessCove?
        for _ in 0..<40 where opened == nil {
            opened = try? await InProcessCove(registries: registries, configuration: MirrorConfiguration(tagTTL: 0, offline: true), storage: storage)
            if opened == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let offline = try #require(opened)
        defer { offline.stop() }
        let b = try await pull(offline, "busybox", tag: "latest")
        #expect(b.ok && b.manifest.body == busybox.manifest)
        let a = try await pull(offline, "team/app", tag: "v1")
        #expect(a.ok && a.manifest.body == app.manifest)
        #expect(try await curl("\(offline.url)/v2/team/app/manifests/\(app.digest)").status == 200)

        // Misses are final, whatever the upstream has.
        let misses: [(String, String, String)] = [
            ("GET", "/v2/team/app/manifests/v2", "MANIFEST_UNKNOWN"),
            ("GET", "/v2/team/app/manifests/\(notPulled.digest)", "MANIFEST_UNKNOWN"),
            ("GET", "/v2/team/app/blobs/\(notPulled.layerDigests[0])", "BLOB_UNKNOWN"),
            ("GET", "/v2/nothing/here/tags/list", "NAME_UNKNOWN"),
        ]
        for (method, path, code) in misses {
            let r = try await curl(offline.url + path, method: method)
            #expect(r.status == 404 && r.errorCode == code, "\(path): \(r.status) \(r.text)")
        }
        let head = try await curl("\(offline.url)/v2/team/app/blobs/\(notPulled.layerDigests[0])", method: "HEAD")
        #expect(head.status == 404)
        // Tag lists come from the cache.
        let tags = try await curl("\(offline.url)/v2/busybox/tags/list")
        #expect(tags.status == 200 && tags.text == #"{"name":"busybox","tags":["latest"]}"#)
        let appTags = try await curl("\(offline.url)/v2/team/app/tags/list")
        #expect(appTags.text == #"{"name":"team/app","tags":["v1"]}"#)

        try await Task.sleep(for: .milliseconds(200))
        #expect(up.allRequests.count == requests)
        #expect(relay.accepted == connections)
    }
}
