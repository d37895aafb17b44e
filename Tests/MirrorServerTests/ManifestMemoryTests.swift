import CacheIndex
import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Issue 11: the in-memory manifest and tag cache in front of the index. A hit from memory must be what a
/// read from the index and the disk would have answered: removed rows leave memory, corruption of what is not
/// in memory is still caught, tags still revalidate after their TTL, and the byte bound holds.
@Suite("Manifest memory", .serialized)
struct ManifestMemoryTests {
    /// A valid OCI image manifest; `n` makes each one different, `padding` makes it larger.
    static func manifest(_ n: Int, padding: Int = 0) -> [UInt8] {
        let hex = String(repeating: String(n % 10), count: 64)
        let note = padding > 0 ? #","annotations":{"pad":"\#(String(repeating: "x", count: padding))"}"# : ""
        return Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(hex)","size":\#(n + 2)},"layers":[]\#(note)}"#.utf8)
    }

    func path(_ cove: InProcessCove, _ digest: Digest) -> String {
        cove.storage.path + "/blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)"
    }

    @Test func aHitFromMemoryReadsNeitherTheIndexNorTheFile() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let body = Self.manifest(1)
        let digest = up.addManifest("team/app", tag: "v1", body: body)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == body)  // fetched
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").body == body)  // read from disk, verified
        #expect(cove.mirror.index.memory.manifest(digest)?.body == body)
        // With the file gone, the memory still answers (the bytes were verified when they entered it), by
        // digest and by tag, with the same headers, and the upstream is not asked.
        try FileManager.default.removeItem(atPath: path(cove, digest))
        let gets = up.count("GET", "/manifests/")
        for reference in [digest.description, "v1"] {
            let r = try await curl("\(cove.url)/v2/team/app/manifests/\(reference)")
            #expect(r.status == 200 && r.body == body)
            #expect(r.headers["docker-content-digest"] == digest.description)
            #expect(r.headers["content-type"] == MediaType.ociManifest)
        }
        #expect(up.count("GET", "/manifests/") == gets)
        // Hits from memory still count for LRU and `cove stats`.
        #expect(cove.mirror.pendingRequestCounts.hits >= 3)
        try cove.mirror.flushAccessTimes()
    }

    @Test func anEvictedManifestLeavesMemoryAndIsFetchedAgain() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let body = Self.manifest(2)
        let digest = up.addManifest("team/app", tag: "v1", body: body)
        let clock = TestClock()
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(maxSize: 10, minFree: .bytes(0), evictionGrace: 60, now: clock.now))
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").body == body)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").body == body)
        #expect(cove.mirror.index.memory.manifest(digest) != nil)
        clock.advance(300)  // past the grace age
        let report = try await cove.mirror.collectGarbage()
        #expect(report.evicted.map(\.digest).contains(digest.description))
        #expect(cove.mirror.index.memory.manifest(digest) == nil)
        #expect(!FileManager.default.fileExists(atPath: path(cove, digest)))
        let gets = up.count("GET", "/manifests/\(digest)")
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").body == body)
        #expect(up.count("GET", "/manifests/\(digest)") == gets + 1)
    }

    @Test func verifyRepairAndForgettingARowDropTheManifestFromMemory() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let body = Self.manifest(3)
        let digest = up.addManifest("team/app", tag: "v1", body: body)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        for _ in 0..<2 { #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").status == 200) }
        #expect(cove.mirror.index.memory.manifest(digest) != nil)
        try cove.mirror.index.forgetBlob(digest.description)
        #expect(cove.mirror.index.memory.manifest(digest) == nil)
        // Rows and memory agree again after the next read.
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").status == 200)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").status == 200)
        #expect(cove.mirror.index.memory.manifest(digest) != nil)
        try FileManager.default.removeItem(atPath: path(cove, digest))
        #expect(try cove.mirror.index.forgetBlob(digest.description, if: { true }))
        #expect(cove.mirror.index.memory.manifest(digest) == nil)
    }

    /// A manifest too large for memory is read from disk every time, so a corrupted file is still caught.
    @Test func aCorruptedFileNotInMemoryIsStillDetected() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let body = Self.manifest(4, padding: 2000)
        let digest = up.addManifest("team/app", tag: "v1", body: body)
        // 8 KiB of memory keeps manifests of at most 1 KiB.
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(manifestMemory: 8192))
        defer { cove.stop() }
        for _ in 0..<3 { #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").body == body) }
        #expect(cove.mirror.index.memory.manifest(digest) == nil)
        var altered = body
        altered[20] ^= 0x20
        try Data(altered).write(to: URL(fileURLWithPath: path(cove, digest)))
        let gets = up.count("GET", "/manifests/\(digest)")
        let r = try await curl("\(cove.url)/v2/team/app/manifests/\(digest)")
        #expect(r.status == 200 && r.body == body)
        #expect(up.count("GET", "/manifests/\(digest)") == gets + 1)
    }

    @Test func aTagThatMovedUpstreamIsRevalidatedAfterItsTTL() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let old = Self.manifest(5), new = Self.manifest(6)
        let oldDigest = up.addManifest("team/app", tag: "v1", body: old)
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(tagTTL: 3))
        defer { cove.stop() }
        for _ in 0..<2 { #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == old) }
        let key = ManifestMemory.TagKey(registry: "upstream.test", repository: "team/app", tag: "v1")
        #expect(cove.mirror.index.memory.tag(key)?.digest == oldDigest.description)
        let newDigest = up.addManifest("team/app", tag: "v1", body: new)
        // Within the TTL the cached mapping answers without asking the upstream.
        let heads = up.count("HEAD", "/manifests/v1")
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == old)
        #expect(up.count("HEAD", "/manifests/v1") == heads)
        try await Task.sleep(for: .milliseconds(3500))
        let moved = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(moved.body == new)
        #expect(moved.headers["docker-content-digest"] == newDigest.description)
        #expect(cove.mirror.index.memory.tag(key)?.digest == newDigest.description)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == new)
        // Revalidation that finds the tag unchanged refreshes the checked-at time in memory too.
        try await Task.sleep(for: .milliseconds(3500))
        let before = try #require(cove.mirror.index.memory.tag(key)?.checkedAt)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == new)
        #expect(try #require(cove.mirror.index.memory.tag(key)?.checkedAt) > before)
        #expect(try cove.mirror.index.tag(registry: "upstream.test", repository: "team/app", tag: "v1")?.checkedAt
                == cove.mirror.index.memory.tag(key)?.checkedAt)
    }

    @Test func theByteBoundHoldsAndTheLeastRecentlyUsedGoFirst() throws {
        let memory = ManifestMemory(capacity: 20_000)
        var digests: [Digest] = []
        for n in 0..<100 {
            let body = Array(repeating: UInt8(n), count: 500)
            let d = Digest.sha256(of: body)
            digests.append(d)
            memory.remember(.init(digest: d, mediaType: MediaType.ociManifest, body: body), since: memory.epoch)
            #expect(memory.usage.bytes <= memory.capacity)
            _ = memory.manifest(digests[0])  // kept in use: never the least recently used
        }
        #expect(memory.manifest(digests[0]) != nil)
        #expect(memory.manifest(digests[99]) != nil)
        #expect(memory.manifest(digests[1]) == nil)
        #expect(memory.usage.manifests < 100 && memory.usage.manifests > 10)
        // Larger than an eighth of the capacity: never kept.
        let big = Array(repeating: UInt8(7), count: 3000)
        memory.remember(.init(digest: Digest.sha256(of: big), mediaType: MediaType.ociManifest, body: big), since: memory.epoch)
        #expect(memory.manifest(Digest.sha256(of: big)) == nil)
    }

    /// A read that began before a removal must not put what it read into memory afterwards.
    @Test func aReadThatRacedARemovalIsNotRemembered() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-memory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let index = try CacheIndex(path: dir.appendingPathComponent("index.sqlite").path, memoryCapacity: 1 << 20)
        let body = Self.manifest(7)
        let d = Digest.sha256(of: body)
        let epoch = index.memory.epoch
        try index.forgetBlob(d.description)  // a removal between the reader's row read and its insert
        index.memory.remember(.init(digest: d, mediaType: MediaType.ociManifest, body: body), since: epoch)
        #expect(index.memory.manifest(d) == nil)
        let now = Date()
        let tag = TagRecord(registry: "r", repository: "a", tag: "v1", digest: d.description, fetchedAt: now, checkedAt: now)
        let tagEpoch = index.memory.epoch
        try index.upsertTag(tag)
        var stale = tag
        stale.digest = "sha256:" + String(repeating: "0", count: 64)
        index.memory.remember(stale, since: tagEpoch)
        #expect(try index.tag(registry: "r", repository: "a", tag: "v1")?.digest == d.description)
    }
}
