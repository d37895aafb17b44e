import CacheIndex
import Foundation
import Mirror
import OCI
import Testing
import Upstream
#if canImport(Glibc)
import Glibc
#endif

/// ENOSPC during a fill, on a real full file system: an 8 MiB tmpfs the test mounts (CI runs as root).
@Suite("Disk full", .serialized)
struct DiskFullTests {
    static var isRoot: Bool { getuid() == 0 }

    /// Runs `body` with a fresh tmpfs of `size` mounted at a temp directory; unmounts afterwards.
    func withTmpfs(size: String, _ body: (URL) async throws -> Void) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-tmpfs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=\(size)", "tmpfs", dir.path]
        try mount.run()
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0, "mount -t tmpfs failed (needs root and CAP_SYS_ADMIN)")
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = ["-l", dir.path]
            try? umount.run()
            umount.waitUntilExit()
        }
        try await body(dir)
    }

    static func available(_ path: String) -> Int64 {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return 0 }
        return Int64(s.f_bavail) * Int64(s.f_frsize)
    }

    @Test(.enabled(if: isRoot, "mounting a size-limited tmpfs needs root (CI runs as root)"))
    func enospcDuringAFillFailsCleanlyEvictsAndKeepsServing() async throws {
        try await withTmpfs(size: "8m") { mountPoint in
            let up = try await FaultUpstream.start()
            defer { up.stop() }
            let pinnedBytes = FaultUpstream.randomBytes(1 << 20), oldBytes = FaultUpstream.randomBytes(1 << 20)
            let pinned = up.addBlob(pinnedBytes), old = up.addBlob(oldBytes)
            // 3 MiB, slowly (about 2.3 s), so the disk can fill up under it. Without a length (chunked): a blob
            // of announced size reserves its blocks when the response head arrives, and would not run out.
            let bigBytes = FaultUpstream.randomBytes(3 << 20)
            let big = up.addBlob(bigBytes, fault: .chunked(chunk: 128 << 10, milliseconds: 100))
            let clock = TestClock()
            let logs = LogCapture()
            let storage = mountPoint.appendingPathComponent("cove-data")
            let cove = try await InProcessCove(
                registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                configuration: MirrorConfiguration(minFree: .bytes(2 << 20), evictionGrace: 60, now: clock.now), storage: storage, logs: logs)
            defer { cove.stop() }
            #expect(try await curl("\(cove.url)/v2/a/blobs/\(pinned)").body == pinnedBytes)
            #expect(try await curl("\(cove.url)/v2/a/blobs/\(old)").body == oldBytes)
            #expect(await eventually { cove.isCached(pinned.description) && cove.isCached(old.description) })
            _ = try cove.mirror.pin("upstream.test/a@\(pinned)")
            clock.advance(300)

            let client = Task { try await curl("\(cove.url)/v2/a/blobs/\(big)", maxTime: 30) }
            // Once the fill has written a little, something else takes all but 64 KiB of the disk.
            #expect(await eventually {
                cove.tmpFiles().contains { name in
                    ((try? FileManager.default.attributesOfItem(atPath: storage.path + "/tmp/" + name)[.size] as? Int) ?? 0) >= 256 << 10
                }
            })
            let filler = mountPoint.appendingPathComponent("filler")
            let fill = max(0, Self.available(mountPoint.path) - (64 << 10))
            let fd = open(filler.path, O_WRONLY | O_CREAT, 0o644)
            #expect(fd >= 0)
            var chunk = [UInt8](repeating: 7, count: 1 << 16)
            var written: Int64 = 0
            while written < fill {
                let n = chunk.withUnsafeMutableBytes { write(fd, $0.baseAddress, Int(min(Int64($0.count), fill - written))) }
                if n <= 0 { break }
                written += Int64(n)
            }
            close(fd)

            let r = try await client.value
            // The client got a 200 head and then a cut body (or an error status): never the whole blob.
            #expect(!(r.exitCode == 0 && r.status == 200 && r.body == bigBytes))
            #expect(r.body.count < bigBytes.count)
            #expect(await eventually { cove.tmpFiles().isEmpty })
            #expect(!cove.isCached(big.description))
            #expect(logs.all.contains { $0.message.contains("storage file system is full") })
            // Eviction ran for the ENOSPC and took the unpinned blob; the pinned one stays.
            #expect(await eventually { cove.mirror.evictionRuns >= 1 && !cove.mirror.evictionRunning })
            #expect(cove.mirror.lastEviction?.trigger == .noSpace || cove.mirror.lastEviction?.trigger == .minFree)
            #expect(!cove.isCached(old.description))
            #expect(cove.isCached(pinned.description))
            // What is cached is still served, from the cache.
            let again = try await curl("\(cove.url)/v2/a/blobs/\(pinned)")
            #expect(again.status == 200 && again.body == pinnedBytes)
            #expect(up.count("GET", "/blobs/\(pinned)") == 1)
            // A new request while the disk is still short: a clean answer, nothing corrupt kept.
            let retry = try await curl("\(cove.url)/v2/a/blobs/\(big)", maxTime: 30)
            #expect(retry.status != 200 || retry.body.count < bigBytes.count || retry.body == bigBytes)
            #expect(await eventually { cove.tmpFiles().isEmpty })
            // Space back: the blob fills and is kept. (With its length announced: the budget admits a blob of
            // unknown length only after it is written, counting its own temp file against `min_free`.)
            try FileManager.default.removeItem(at: filler)
            up.setFault(big, .none)
            let fine = try await curl("\(cove.url)/v2/a/blobs/\(big)", maxTime: 30)
            #expect(fine.status == 200 && fine.body == bigBytes)
            #expect(await eventually { cove.isCached(big.description) })
        }
    }
}
