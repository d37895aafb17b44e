import CacheIndex
import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// The disk budget: LRU eviction under `max_size`, in-use protection, pins, GC during a first fill, blobs
/// larger than the budget, batched access times. Time comes from a `TestClock`, never from sleeping.
@Suite("Eviction and pins", .serialized)
struct EvictionTests {
    static func config(_ clock: TestClock, maxSize: Int64?, minFree: FreeSpace = .bytes(0), tagTTL: Double = 300) -> MirrorConfiguration {
        MirrorConfiguration(tagTTL: tagTTL, maxSize: maxSize, minFree: minFree, evictionGrace: 60, now: clock.now)
    }

    /// GETs a blob through Cove and waits until its fill committed (clients get the bytes before the row is
    /// written, and the commit time comes from the test clock).
    func fetch(_ cove: InProcessCove, _ digest: Digest, _ bytes: [UInt8]) async throws {
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(digest)").body == bytes)
        #expect(await eventually { cove.isCached(digest.description) })
    }

    /// Waits until every object of `image` is cached.
    func settled(_ cove: InProcessCove, _ image: TestImage) async {
        for d in [image.digest, image.configDigest] + image.layerDigests {
            #expect(await eventually { cove.isCached(d.description) }, "\(d) cached")
        }
    }

    static func registries(_ up: FaultUpstream) -> [RegistryConfiguration] {
        [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])]
    }

    @Test func leastRecentlyUsedGoesFirstUnderASmallMaxSize() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let blobs = (0..<4).map { _ in FaultUpstream.randomBytes(100_000) }
        let d = blobs.map { up.addBlob($0) }
        let clock = TestClock()
        // Room for three; eviction goes down to 90 % (315,000 bytes).
        let cove = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: 350_000))
        defer { cove.stop() }
        for i in 0..<3 {
            try await fetch(cove, d[i], blobs[i])
            clock.advance(10)
        }
        // A hit makes blob 0 the most recently used; blob 1 is now the least.
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(d[0])").status == 200)
        clock.advance(300)  // past the grace age
        try await fetch(cove, d[3], blobs[3])
        #expect(!cove.isCached(d[1].description))
        for i in [0, 2, 3] { #expect(cove.isCached(d[i].description), "blob \(i)") }
        #expect(cove.mirror.lastEviction?.evicted.map(\.digest) == [d[1].description])
        #expect(cove.mirror.lastEviction?.trigger == .fill)
        #expect(try cove.mirror.index.counter(CacheCounter.evictions) == 1)
        #expect(try cove.mirror.index.counter(CacheCounter.evictedBytes) == 100_000)
        // Online, an evicted blob fills again; the next least recently used (blob 2) makes room.
        clock.advance(300)
        try await fetch(cove, d[1], blobs[1])
        #expect(up.count("GET", "/blobs/\(d[1])") == 2)
        #expect(cove.mirror.lastEviction?.evicted.map(\.digest) == [d[2].description])
        #expect(cove.isCached(d[1].description) && cove.isCached(d[0].description) && cove.isCached(d[3].description))
        let total = try cove.mirror.index.totals().bytes
        #expect(total <= 350_000)
        #expect(cove.tmpFiles().isEmpty)
    }

    @Test func aBlobBeingStreamedIsNotEvicted() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        // Larger than loopback socket buffers, so the response is still being written while the client reads.
        let chunk = FaultUpstream.randomBytes(1 << 20)
        let bytes = Array((0..<40).map { _ in chunk }.joined())
        let digest = up.addBlob(bytes)
        let clock = TestClock()
        let storage: URL
        do {
            let filler = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: nil))
            try await fetch(filler, digest, bytes)
            storage = filler.storage
            filler.stop(keepStorage: true)
        }
        clock.advance(300)
        // Restarted with a budget smaller than the blob.
        let cove = try await InProcessCove(registries: Self.registries(up), configuration: Self.config(clock, maxSize: 1 << 20), storage: storage)
        defer { cove.stop() }
        // A slow client (8 MiB/s): the response takes about 5 s.
        let slow = Task { try await curl("\(cove.url)/v2/a/blobs/\(digest)", maxTime: 60, limitRate: "8M") }
        #expect(await eventually { cove.mirror.cacheUse.readers(of: digest.description) > 0 })
        let during = try await cove.mirror.collectGarbage()
        #expect(during.evicted.isEmpty)
        #expect(during.skippedInUse == 1)
        #expect(cove.isCached(digest.description))
        let r = try await slow.value
        #expect(r.exitCode == 0 && r.body == bytes)
        #expect(up.count("GET", "/blobs/") == 1)
        // The response ended: the lease is gone and the next pass evicts it.
        #expect(await eventually { cove.mirror.cacheUse.readers(of: digest.description) == 0 })
        let after = try await cove.mirror.collectGarbage()
        #expect(after.evicted.map(\.digest) == [digest.description])
        #expect(!cove.isCached(digest.description))
    }

    @Test func inUseProtectionReleasesWithTheLease() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(200_000)
        let digest = up.addBlob(bytes)
        let clock = TestClock()
        let storage: URL
        do {
            let filler = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: nil))
            try await fetch(filler, digest, bytes)
            storage = filler.storage
            filler.stop(keepStorage: true)
        }
        clock.advance(300)
        // Restarted with a budget smaller than what is cached.
        let cove = try await InProcessCove(registries: Self.registries(up), configuration: Self.config(clock, maxSize: 100_000), storage: storage)
        defer { cove.stop() }
        let registry = try #require(cove.registry("upstream.test"))
        var served: ServedBlob? = try await cove.mirror.blob(registry, try RepositoryName("a"), digest)
        #expect(served?.size == 200_000)
        let held = try await cove.mirror.collectGarbage()
        #expect(held.evicted.isEmpty && held.skippedInUse == 1)
        #expect(cove.isCached(digest.description))
        served = nil
        let freed = try await cove.mirror.collectGarbage()
        #expect(freed.evicted.map(\.digest) == [digest.description])
        #expect(!cove.isCached(digest.description))
        #expect(!FileManager.default.fileExists(atPath: cove.storage.path + "/blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)"))
    }

    @Test func gcDuringAFirstFillKeepsTheFillAndWhatItCommitted() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let old = FaultUpstream.randomBytes(1 << 20)
        let oldDigest = up.addBlob(old)
        // A new repository's image whose layer arrives slowly (about 1.6 s).
        let image = up.addImage("fresh/app", tag: "v1", layers: 1, layerSize: 1 << 20, blobFault: .slow(chunk: 64 << 10, milliseconds: 100))
        let clock = TestClock()
        // 2.2 MiB: the old blob and the new image fit, but not under the 90 % low watermark.
        let cove = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: 2_306_867))
        defer { cove.stop() }
        try await fetch(cove, oldDigest, old)
        clock.advance(300)
        let pulling = Task { try await pull(cove, "fresh/app", tag: "v1") }
        // Wait until the layer's fill is under way (its temp file has bytes), then collect garbage.
        #expect(await eventually {
            cove.tmpFiles().contains { name in
                let size = (try? FileManager.default.attributesOfItem(atPath: cove.storage.path + "/tmp/" + name)[.size] as? Int) ?? 0
                return name.hasPrefix(String(image.layerDigests[0].hex.prefix(16))) && size > 0
            }
        })
        let gc = try await cove.mirror.collectGarbage()
        let fresh = Set([image.digest, image.configDigest, image.layerDigests[0]].map(\.description))
        #expect(gc.evicted.map(\.digest) == [oldDigest.description])  // only the old, unused blob
        #expect(fresh.isDisjoint(with: gc.evicted.map(\.digest)))
        let result = try await pulling.value
        #expect(result.ok)
        for d in fresh { #expect(await eventually { cove.isCached(d) }, "\(d)") }
        // A second pass right after the commit still leaves it alone (grace age, injected clock).
        let again = try await cove.mirror.collectGarbage()
        #expect(fresh.isDisjoint(with: again.evicted.map(\.digest)))
        for d in fresh { #expect(cove.isCached(d), "\(d)") }
        #expect(cove.tmpFiles().isEmpty)
        #expect(up.count("GET", "/blobs/\(image.layerDigests[0])") == 1)
    }

    @Test func pinsSurviveAnyEvictionIndexChildrenAndMovedTagsIncluded() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let child = up.addImage("team/x", tag: "child")
        let indexBody = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(child.digest)","size":\#(child.manifest.count),"platform":{"architecture":"amd64","os":"linux"}}]}"#.utf8)
        let indexDigest = up.addManifest("team/x", tag: "multi", body: indexBody, mediaType: MediaType.ociIndex)
        let y1 = up.addImage("team/y", tag: "v1")
        let z = up.addImage("team/z", tag: "v1")
        let clock = TestClock()
        let storage: URL
        let y2: TestImage, w1: TestImage, w2: TestImage
        do {
            let cove = try await InProcessCove(registries: Self.registries(up), configuration: Self.config(clock, maxSize: nil, tagTTL: 0))
            #expect(try await curl("\(cove.url)/v2/team/x/manifests/multi").status == 200)
            #expect(try await pull(cove, "team/x", tag: child.digest.description).ok)
            #expect(try await pull(cove, "team/y", tag: "v1").ok)
            #expect(try await pull(cove, "team/z", tag: "v1").ok)
            for img in [child, y1, z] { await settled(cove, img) }
            let pinnedIndex = try cove.mirror.pin("upstream.test/team/x@\(indexDigest)")
            #expect(pinnedIndex.cached && pinnedIndex.objects == 4)  // index, child manifest, config, layer
            let pinnedTag = try cove.mirror.pin("upstream.test/team/y:v1")
            #expect(pinnedTag.digest == y1.digest.description)
            // The tag moves upstream; the pull follows it. Both the pinned and the current image are kept.
            y2 = up.addImage("team/y", tag: "v1")
            #expect(try await pull(cove, "team/y", tag: "v1").ok)
            await settled(cove, y2)
            #expect(try cove.mirror.index.tag(registry: "upstream.test", repository: "team/y", tag: "v1")?.digest == y2.digest.description)
            let notYet = try cove.mirror.pin("upstream.test/team/w:v9")
            #expect(!notYet.cached && notYet.digest == nil)
            // Pinned before its first pull: the image the tag first resolves to stays pinned after the tag moves.
            w1 = up.addImage("team/w", tag: "v9")
            #expect(try await pull(cove, "team/w", tag: "v9").ok)
            await settled(cove, w1)
            w2 = up.addImage("team/w", tag: "v9")
            #expect(try await pull(cove, "team/w", tag: "v9").ok)
            await settled(cove, w2)
            storage = cove.storage
            cove.stop(keepStorage: true)
        }
        clock.advance(3600)
        // Restarted with a budget of one byte: everything unpinned must go.
        let cove = try await InProcessCove(registries: Self.registries(up), configuration: Self.config(clock, maxSize: 1), storage: storage)
        defer { cove.stop() }
        let report = try await cove.mirror.collectGarbage()
        let zAll = [z.digest, z.configDigest] + z.layerDigests
        #expect(Set(report.evicted.map(\.digest)) == Set(zAll.map(\.description)))
        for d in [indexDigest, child.digest, child.configDigest] + child.layerDigests { #expect(cove.isCached(d.description), "index closure \(d)") }
        for img in [y1, y2, w1, w2] {
            for d in [img.digest, img.configDigest] + img.layerDigests { #expect(cove.isCached(d.description), "pinned tag \(d)") }
        }
        for d in zAll { #expect(!cove.isCached(d.description)) }
        // The manifest row went with its blob row; the tag row stays and re-resolves online.
        #expect(try cove.mirror.index.manifest(z.digest.description) == nil)
        #expect(try cove.mirror.index.tag(registry: "upstream.test", repository: "team/z", tag: "v1") != nil)
        #expect(try await pull(cove, "team/z", tag: "v1").ok)
        // The refill's commits start a background pass (the budget is one byte): let it end first, so the pass
        // below is the one that meets the unpinned images.
        for d in zAll {
            for _ in 0..<200 where await cove.mirror.fillInFlight(d) != nil { try await Task.sleep(for: .milliseconds(25)) }
        }
        #expect(await eventually { !cove.mirror.evictionRunning })
        // Unpinned, the tag's images go at the next pass.
        let (_, removed) = try cove.mirror.unpin("upstream.test/team/y:v1")
        #expect(removed)
        #expect(try cove.mirror.unpin("upstream.test/team/y:v1").removed == false)
        clock.advance(3600)
        let second = try await cove.mirror.collectGarbage()
        for d in [y1.digest, y2.digest] { #expect(second.evicted.map(\.digest).contains(d.description)) }
        #expect(cove.isCached(indexDigest.description) && cove.isCached(child.layerDigests[0].description))
        #expect(try cove.mirror.pins().map(\.reference).sorted() == [indexDigest.description, "v9"])
    }

    @Test func aBlobLargerThanTheBudgetIsServedWholeButNotKept() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(800_000)
        let digest = up.addBlob(bytes)
        let logs = LogCapture()
        let clock = TestClock()
        let cove = try await InProcessCove(registries: Self.registries(up), configuration: Self.config(clock, maxSize: 500_000), logs: logs)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.exitCode == 0 && r.status == 200 && r.body == bytes)
        #expect(await eventually { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(digest.description))
        #expect(logs.all.contains { $0.message.contains("larger than the whole cache budget") && $0.metadata["digest"] == digest.description })
        #expect(try cove.mirror.index.totals().bytes == 0)
        // Each request streams it again from the upstream.
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(digest)").body == bytes)
        #expect(up.count("GET", "/blobs/") == 2)
    }

    /// A fill that cannot get enough room (the rest is recent) evicts nothing: partial evictions for a blob
    /// that is then not kept would lose content for nothing.
    @Test func aFillThatCannotGetRoomEvictsNothing() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let old = FaultUpstream.randomBytes(100_000), recent = FaultUpstream.randomBytes(100_000), big = FaultUpstream.randomBytes(200_000)
        let (dOld, dRecent, dBig) = (up.addBlob(old), up.addBlob(recent), up.addBlob(big))
        let clock = TestClock()
        let cove = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: 300_000))
        defer { cove.stop() }
        try await fetch(cove, dOld, old)
        clock.advance(300)  // old is past the grace age; recent will not be
        try await fetch(cove, dRecent, recent)
        // 200,000 more would need 230,000 freed (down to 270,000); only 100,000 (old) may go.
        let r = try await curl("\(cove.url)/v2/a/blobs/\(dBig)")
        #expect(r.status == 200 && r.body == big)
        #expect(await eventually { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(dBig.description))
        #expect(cove.isCached(dOld.description) && cove.isCached(dRecent.description), "nothing was evicted for a blob not kept")
        #expect(try cove.mirror.index.counter(CacheCounter.evictions) == 0)
    }

    @Test func hitsWriteAccessTimesOnlyInBatches() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(10_000)
        let digest = up.addBlob(bytes)
        let clock = TestClock()
        let cove = try await InProcessCove(upstream: up.url, configuration: Self.config(clock, maxSize: nil))
        defer { cove.stop() }
        let t0 = clock.now()
        try await fetch(cove, digest, bytes)
        try cove.mirror.flushAccessTimes()
        clock.advance(500)
        for _ in 0..<3 { #expect(try await curl("\(cove.url)/v2/a/blobs/\(digest)").status == 200) }
        // Hits did not write the index...
        let row = try #require(try cove.mirror.index.blob(digest.description))
        #expect(abs(row.lastAccessAt.timeIntervalSince(t0)) < 0.01)
        // ...until the batch is flushed, in one transaction with the hit counter.
        try cove.mirror.flushAccessTimes()
        let flushed = try #require(try cove.mirror.index.blob(digest.description))
        #expect(abs(flushed.lastAccessAt.timeIntervalSince(t0.addingTimeInterval(500))) < 0.01)
        #expect(try cove.mirror.index.counter(CacheCounter.hits) == 3)
        #expect(try cove.mirror.index.counter(CacheCounter.misses) == 1)
    }

    @Test func imageReferencesRouteLikeServe() async throws {
        let router = UpstreamRouter(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint("https://registry-1.docker.io")]),
                                                 RegistryConfiguration(name: "ghcr.io", endpoints: [InProcessCove.endpoint("https://ghcr.io")])],
                                    defaultName: "docker.io", allowAnyRegistry: false, logger: .init(label: "t"))
        #expect(try ImageReference.parse("busybox:1.36", router: router).description == "docker.io/library/busybox:1.36")
        #expect(try ImageReference.parse("busybox", router: router).description == "docker.io/library/busybox:latest")
        #expect(try ImageReference.parse("index.docker.io/team/app:v2", router: router).description == "docker.io/team/app:v2")
        let hex = String(repeating: "ab", count: 32)
        #expect(try ImageReference.parse("ghcr.io/org/app@sha256:\(hex)", router: router).description == "ghcr.io/org/app@sha256:\(hex)")
        #expect(throws: DistributionError.self) { try ImageReference.parse("quay.io/org/app:v1", router: router) }
        #expect(throws: DistributionError.self) { try ImageReference.parse("Bad Name:v1", router: router) }
    }
}
