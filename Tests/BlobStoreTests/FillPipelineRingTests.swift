@testable import BlobStore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import OCI
import Synchronization
import Testing

/// What readers of a pipelined fill get from its ring: received bytes before the writer has written them, and
/// the file once the ring space was reused.
@Suite("Fill pipeline ring")
struct FillPipelineRingTests {
    /// A temp file, a pipeline on it that reports received offsets, and a gate that holds its writer back.
    final class Fixture: @unchecked Sendable {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cove-ring-\(UUID().uuidString)").path
        let fd: Int32
        let pipeline: FillPipeline
        /// The last offset the pipeline reported received.
        final class Offset: Sendable { let value = Mutex<Int64>(0) }
        let received = Offset()
        let gate = NSCondition()
        var opened = false

        init() {
            fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0o600)
            let received = received
            pipeline = FillPipeline(fd: fd, path: path, algorithm: .sha256) { offset in received.value.withLock { $0 = offset } }
            pipeline.beforeWrite = { [gate] in
                gate.lock()
                while !self.opened { gate.wait() }
                gate.unlock()
            }
        }

        func release() { gate.lock(); opened = true; gate.broadcast(); gate.unlock() }
        var fileSize: Int64 { var st = stat(); fstat(fd, &st); return Int64(st.st_size) }
        deinit { close(fd); unlink(path) }
    }

    static func bytes(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) } }

    @Test func receivedBytesReachReadersBeforeTheyAreWritten() throws {
        let f = Fixture()
        let data = Self.bytes(3 << 20)
        f.pipeline.start(at: 0)
        try data.withUnsafeBytes { try f.pipeline.append($0, at: 0) }
        // Reported as soon as they were copied in, with the writer still held back.
        #expect(f.received.value.withLock { $0 } == Int64(data.count))
        #expect(f.fileSize == 0)
        var out = [UInt8](repeating: 0, count: 1 << 20)
        let got = out.withUnsafeMutableBytes { f.pipeline.copyRecent(into: $0, at: 2 << 20) }
        #expect(got == .copied(1 << 20))
        #expect(out[...] == data[(2 << 20)...])
        // A read running past what was received gets what there is.
        let tail = out.withUnsafeMutableBytes { f.pipeline.copyRecent(into: $0, at: Int64(data.count) - 10) }
        #expect(tail == .copied(10))

        f.release()
        try f.pipeline.drain()
        #expect(f.fileSize == Int64(data.count))
        #expect(f.pipeline.hasher.finalize() == .sha256(of: data))
        f.pipeline.stop(abort: false)
        // Stopped: everything is in the file.
        #expect(out.withUnsafeMutableBytes { f.pipeline.copyRecent(into: $0, at: 0) } == .inFile(before: .max))
    }

    @Test func bytesWhoseRingSpaceWasReusedComeFromTheFile() throws {
        let f = Fixture()
        f.release()
        let data = Self.bytes(FillPipeline.capacity * 2 + 4321)
        f.pipeline.start(at: 0)
        try data.withUnsafeBytes { try f.pipeline.append($0, at: 0) }
        try f.pipeline.drain()
        var out = [UInt8](repeating: 0, count: 64 << 10)
        // Offset 0 was overwritten twice over: the file holds it, and everything below `before` is written.
        guard case .inFile(let before) = out.withUnsafeMutableBytes({ f.pipeline.copyRecent(into: $0, at: 0) }) else {
            Issue.record("offset 0 still claimed to be in the ring")
            return
        }
        #expect(before == Int64(data.count))
        // The newest bytes are still in the ring.
        let recent = Int64(data.count - out.count)
        #expect(out.withUnsafeMutableBytes { f.pipeline.copyRecent(into: $0, at: recent) } == .copied(out.count))
        #expect(out[...] == data[Int(recent)...])
        f.pipeline.stop(abort: false)
    }
}
