import BlobStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import OCI
import Testing

/// The fill pipeline (`FillPipeline` behind `BlobFillWriter`): preallocation, byte-exact readers of a pipelined
/// fill, verification failures, and upstreams without a length. Blobs here are larger than the pipeline's
/// threshold (1 MiB), so the writer and hasher threads do the work.
@Suite("Fill pipeline", .serialized)
struct FillPipelineTests {
    /// A fresh storage directory with its store.
    struct Storage {
        let root: URL
        let store: BlobStore
        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("cove-pipeline-\(UUID().uuidString)")
            store = try BlobStore(root: root)
        }
        func remove() { try? FileManager.default.removeItem(at: root) }
        var tmpFiles: [String] { (try? FileManager.default.contentsOfDirectory(atPath: root.path + "/tmp")) ?? [] }
        /// Length and allocated bytes of a file under the root; nil when it does not exist.
        func fileInfo(_ relative: String) -> (size: Int64, allocated: Int64)? { fileSizes(root.path + "/" + relative) }
    }

    static func digest(_ bytes: [UInt8]) -> OCI.Digest { .sha256(of: bytes) }

    /// Feeds `bytes` to `writer` from a thread of its own (as libcurl's transfer thread does) in chunks of
    /// varying size, pausing now and then so readers catch up mid-fill; returns the commit's outcome.
    static func produce(_ bytes: [UInt8], into writer: BlobFillWriter, announce: Bool = true, pauseEvery: Int = 0) async -> Result<Bool, BlobStoreError> {
        await withCheckedContinuation { c in
            let t = Thread {
                var offset = 0, step = 0
                do {
                    if announce { try writer.expect(size: Int64(bytes.count)) }
                    while offset < bytes.count {
                        let n = min(bytes.count - offset, [1, 700, 16 << 10, 300 << 10, 1 << 20, 77][step % 6])
                        try bytes.withUnsafeBytes { raw in try writer.append(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + n])) }
                        offset += n
                        step += 1
                        if pauseEvery > 0, step % pauseEvery == 0 { usleep(2000) }
                    }
                    c.resume(returning: .success(try writer.commit()))
                } catch let e as BlobStoreError {
                    c.resume(returning: .failure(e))
                } catch {
                    c.resume(returning: .failure(.io("\(error)")))
                }
            }
            t.start()
        }
    }

    /// Reads the whole blob as a client would: wait for visible bytes, `pread` them, until `size`.
    static func readAll(_ fill: BlobFill, size: Int, wake: Int) async throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        var offset = 0
        while offset < size {
            let visible = Int(try await fill.waitForBytes(atLeast: Int64(min(size, offset + wake))))
            while offset < visible {
                let n = out.withUnsafeMutableBytes { raw in
                    fill.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[offset..<min(visible, offset + (256 << 10))]), at: Int64(offset))
                }
                guard n > 0 else {
                    // A failed fill truncates its file: the fill's own error says why (BlobStreaming aborts the
                    // connection on such a short read).
                    _ = try await fill.waitForBytes(atLeast: Int64(size))
                    throw BlobStoreError.io("read returned \(n) at \(offset)")
                }
                offset += n
            }
        }
        return out
    }

    @Test func preallocatedFillCommitsAFileOfExactlyTheBlobSize() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let bytes = FaultUpstream.randomBytes(6 << 20 + 12345)
        let digest = Self.digest(bytes)
        let fill = try BlobFill(store: storage.store, digest: digest)
        let writer = fill.makeWriter()
        try writer.expect(size: Int64(bytes.count))
        writer.preallocate()
        // The blocks are reserved up front, the length is what was written (none yet).
        let before = try #require(storage.fileInfo(fill.temporaryPath))
        #expect(before.size == 0)
        #expect(before.allocated >= Int64(bytes.count))
        let result = await Self.produce(bytes, into: writer, announce: false)
        #expect(try result.get() == true)
        let committed = try #require(storage.fileInfo(String(storage.store.path(for: digest).dropFirst(storage.root.path.count + 1))))
        #expect(committed.size == Int64(bytes.count))
        #expect(FileManager.default.contents(atPath: storage.store.path(for: digest)) == Data(bytes))
        #expect(storage.tmpFiles.isEmpty)
    }

    @Test func aFailedPreallocatedFillLeavesNoFile() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let bytes = FaultUpstream.randomBytes(5 << 20)
        let fill = try BlobFill(store: storage.store, digest: Self.digest(bytes))
        let writer = fill.makeWriter()
        try writer.expect(size: Int64(bytes.count))
        writer.preallocate()
        try bytes.withUnsafeBytes { raw in try writer.append(UnsafeRawBufferPointer(rebasing: raw[0..<(3 << 20)])) }
        let reader = Task { try await fill.waitForBytes(atLeast: Int64(bytes.count)) }
        writer.fail(DistributionError(.unavailable, "upstream went away"))
        await #expect(throws: DistributionError.self) { try await reader.value }
        #expect(storage.fileInfo(fill.temporaryPath) == nil)
        #expect(storage.tmpFiles.isEmpty)
        #expect(!storage.store.contains(fill.digest))
    }

    @Test func readersOfAPipelinedFillSeeByteExactData() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let bytes = FaultUpstream.randomBytes(12 << 20 + 3)
        let fill = try BlobFill(store: storage.store, digest: Self.digest(bytes))
        let writer = fill.makeWriter()
        async let produced = Self.produce(bytes, into: writer, pauseEvery: 5)
        let bodies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for wake in [1, 4096, 128 << 10, 1 << 20, 3 << 20, 64 << 20] {
                group.addTask { try await Self.readAll(fill, size: bytes.count, wake: wake) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(try await produced.get() == true)
        #expect(bodies.count == 6)
        for body in bodies { #expect(body == bytes) }
        #expect(storage.store.contains(fill.digest))
        #expect(storage.tmpFiles.isEmpty)
    }

    @Test func aDigestMismatchMidPipelineFailsEveryReaderAndUnlinks() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let good = FaultUpstream.randomBytes(9 << 20)
        var bad = good
        bad[bad.count / 2] ^= 0xFF
        let fill = try BlobFill(store: storage.store, digest: Self.digest(good))
        let writer = fill.makeWriter()
        async let produced = Self.produce(bad, into: writer, pauseEvery: 3)
        let outcomes = await withTaskGroup(of: Result<[UInt8], any Error>.self) { group in
            for wake in [1, 256 << 10, 2 << 20, 64 << 20] {
                group.addTask {
                    do { return .success(try await Self.readAll(fill, size: good.count, wake: wake)) } catch { return .failure(error) }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        guard case .failure(.digestMismatch) = await produced else {
            Issue.record("commit did not fail with a digest mismatch")
            return
        }
        #expect(outcomes.count == 4)
        for outcome in outcomes {
            // Every reader ends with the fill's error; none ever had the last byte.
            #expect(throws: DistributionError.self) { try outcome.get() }
        }
        #expect(storage.fileInfo(fill.temporaryPath) == nil)
        #expect(storage.tmpFiles.isEmpty)
        #expect(!storage.store.contains(fill.digest))
    }

    @Test func aChunkedUpstreamWithoutALengthStillFills() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(5 << 20 + 17)
        let digest = up.addBlob(bytes, fault: .chunked(chunk: 200 << 10, milliseconds: 0))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await concurrentGets("\(cove.url)/v2/a/blobs/\(digest)", count: 4)
        for r in results {
            #expect(r.exitCode == 0)
            #expect(r.status == 200)
            #expect(r.body == bytes)
        }
        #expect(up.count("GET", "/blobs/") == 1)
        #expect(await eventually { cove.isCached(digest.description) })
        #expect(cove.tmpFiles().isEmpty)
    }

    @Test func aMidBlobCorruptionThroughHTTPReachesNoClientWhole() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(6 << 20)
        let digest = up.addBlob(bytes, fault: .corruptMiddle(chunk: 512 << 10, milliseconds: 30))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await concurrentGets("\(cove.url)/v2/a/blobs/\(digest)", count: 6)
        for r in results {
            #expect(!(r.exitCode == 0 && r.status == 200 && r.body.count == bytes.count))
            if r.status == 200 { #expect(r.body.count < bytes.count) }
        }
        #expect(await eventually { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(digest.description))
    }

    /// An upstream cuts a transfer whose bytes were corrupt, then ignores the resume `Range` and sends the right
    /// blob from byte 0. Readers already had the first attempt's bytes (corrupt byte included) and continue from
    /// their offsets, so a fill that verified only the second attempt would hand them a complete, wrong body.
    /// The restarted body must repeat the bytes readers may have had, or the fill fails.
    @Test func aRestartedBodyThatDiffersFromTheFirstAttemptFailsTheFill() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let bytes = FaultUpstream.randomBytes(6 << 20)
        var corrupt = bytes
        corrupt[1 << 20] ^= 0xFF
        let fill = try BlobFill(store: storage.store, digest: Self.digest(bytes))
        let writer = fill.makeWriter()
        try writer.expect(size: Int64(bytes.count))
        // First attempt: 3 MiB, a corrupt byte at 1 MiB, then the connection drops.
        try corrupt.withUnsafeBytes { raw in try writer.append(UnsafeRawBufferPointer(rebasing: raw[0..<(3 << 20)])) }
        // A reader takes what is visible, the corrupt byte among it.
        let visible = Int(try await fill.waitForBytes(atLeast: 2 << 20))
        var got = [UInt8](repeating: 0, count: visible)
        var offset = 0
        while offset < visible {
            let n = got.withUnsafeMutableBytes { fill.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[offset...]), at: Int64(offset)) }
            try #require(n > 0)
            offset += n
        }
        #expect(got[1 << 20] == corrupt[1 << 20])
        // Second attempt: the upstream ignores the Range and sends the correct blob from byte 0.
        writer.restart()
        let result = await Self.produce(bytes, into: writer)
        // The reader would go on from `visible` with the second attempt's bytes: the fill must not verify.
        #expect(throws: BlobStoreError.contentChanged(offset: 1 << 20)) { try result.get() }
        // As the mirror does when an append fails (BlobFills): the fill fails and readers get the error.
        if case .failure = result { writer.fail(DistributionError(.unavailable, "bad restart")) }
        await #expect(throws: DistributionError.self) { try await fill.waitForBytes(atLeast: Int64(bytes.count)) }
        #expect(!storage.store.contains(fill.digest))
        #expect(storage.tmpFiles.isEmpty)
    }

    /// The same restart with an upstream that repeats the first attempt's bytes exactly still verifies.
    @Test func aRestartedBodyThatRepeatsTheFirstAttemptVerifies() async throws {
        let storage = try Storage()
        defer { storage.remove() }
        let bytes = FaultUpstream.randomBytes(6 << 20 + 7)
        let fill = try BlobFill(store: storage.store, digest: Self.digest(bytes))
        let writer = fill.makeWriter()
        try writer.expect(size: Int64(bytes.count))
        try bytes.withUnsafeBytes { raw in try writer.append(UnsafeRawBufferPointer(rebasing: raw[0..<(3 << 20)])) }
        writer.restart()
        let result = await Self.produce(bytes, into: writer)
        #expect(try result.get() == true)
        #expect(FileManager.default.contents(atPath: storage.store.path(for: fill.digest)) == Data(bytes))
        #expect(storage.tmpFiles.isEmpty)
    }
}

/// `st_size` and `st_blocks * 512` of `path`, or nil when it does not exist.
private func fileSizes(_ path: String) -> (size: Int64, allocated: Int64)? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return (Int64(st.st_size), Int64(st.st_blocks) * 512)
}
