import BlobStore
import Foundation
import Hummingbird
import Mirror
@testable import MirrorServer
import NIOCore
import NIOPosix
import OCI
import Synchronization
import Testing

/// `BlobStreaming.write` (the `pread` path TLS connections take) keeps no more than its buffers' worth of chunks
/// waiting for the connection's event loop: Hummingbird's body writer returns once it has queued a write for the
/// loop, so without the wait a loop busy encrypting for other connections let each response pile up dozens of
/// 256 KiB chunks (bench/RESULTS.md, "TLS: bounded queue").
@Suite("Blob streaming backpressure")
struct BlobStreamingBackpressureTests {
    /// Counts what a body writer was handed and what its event loop has taken.
    final class Tally: Sendable {
        private let state = Mutex((queued: 0, taken: [UInt8]()))
        var queued: Int { state.withLock { $0.queued } }
        var taken: [UInt8] { state.withLock { $0.taken } }
        func queue() { state.withLock { $0.queued += 1 } }
        func take(_ buffer: ByteBuffer) { state.withLock { $0.taken += buffer.readableBytesView } }
    }

    /// Behaves like Hummingbird's writer over `NIOAsyncChannel` on a writable channel: each write hops to the
    /// event loop and returns before the loop has run it.
    struct LoopHoppingWriter: ResponseBodyWriter {
        let loop: any EventLoop
        let tally: Tally

        mutating func write(_ buffer: ByteBuffer) async throws {
            tally.queue()
            loop.execute { [tally] in tally.take(buffer) }
        }

        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    @Test func aStalledEventLoopHoldsTheReadsBackAndTheBodyArrivesWhole() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cove-backpressure-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let store = try BlobStore(root: root)
        defer { store.close() }
        // 32 chunks: without the wait, all of them are queued long before the check below.
        let bytes = FaultUpstream.randomBytes(32 * BlobStreaming.chunkSize + 12345)
        let digest = OCI.Digest.sha256(of: bytes)
        try store.put(bytes, as: digest)
        let file = try store.open(digest).get()

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        // The loop is busy (as with other connections' encryption) until `resume` is signalled.
        let resume = DispatchSemaphore(value: 0)
        loop.execute { resume.wait() }
        let tally = Tally()
        let streaming = Task {
            var writer: any ResponseBodyWriter = LoopHoppingWriter(loop: loop, tally: tally)
            try await BlobStreaming.write(.file(file), range: ByteRange(start: 0, end: Int64(bytes.count) - 1), to: &writer, eventLoop: loop)
        }
        // Wait (bounded) until the writer has filled its buffers, then a while longer: time enough for page-cache
        // reads of the other 30 chunks if nothing held them back.
        for _ in 0..<3000 where tally.queued < BlobStreaming.buffersPerResponse {
            try await Task.sleep(for: .milliseconds(10))
        }
        try await Task.sleep(for: .milliseconds(300))
        let queuedWhileStalled = tally.queued
        resume.signal()
        try await streaming.value
        try await loop.submit {}.get()  // the last write has been taken
        try await group.shutdownGracefully()

        #expect(queuedWhileStalled == BlobStreaming.buffersPerResponse)
        #expect(tally.taken == bytes)
    }
}
