import BlobStore
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Sends a byte range of a committed blob file with `sendfile(2)`: no userspace copy, no buffer memory.
///
/// The range goes as `FileRegion`s written through the connection's `FileRegionWriter` (installed by
/// `SendfileHTTP1Channel`), below Hummingbird's body writer, which takes `ByteBuffer`s only. Connections without
/// one (TLS) get `.unavailable` before any byte is written, and the caller streams with `BlobStreaming` instead.
///
/// **Ordering** (head, body, end; nothing interleaved). Hummingbird writes a response as: head through the
/// connection's `NIOAsyncChannelOutboundWriter`, then calls the body closure (this), then, after it returns, the
/// closure's `finish` writes `.end` through the same writer; the next request on the connection is read only
/// after that (`HTTPChannelHandler.handleHTTP` awaits the responder), so no other response's parts exist yet.
/// 1. Head before the first region: the body closure runs only after `outbound.write(.head)` returned, and
///    `NIOAsyncWriter.yield` returns only once it handed the element to its delegate (a suspended yield is
///    retried and delivered before it returns; the writer keeps nothing buffered across a return). The delegate
///    (`NIOAsyncChannelHandlerWriterDelegate.didYield`) either wrote the head into the pipeline already (on the
///    event loop) or enqueued that write with `eventLoop.execute`. Each region is written from a task this code
///    enqueues with `eventLoop.execute` afterwards, and `SelectableEventLoop` runs enqueued tasks first in, first
///    out (`execute` always enqueues, even on the loop), so the region enters the pipeline after the head.
/// 2. One region at a time: the next is enqueued only after the previous write's promise completed (the
///    kernel took every byte, or the write failed), so regions are in order and at most one is queued.
/// 3. End after the last region: this returns only after the last write's promise completed, and only then does
///    the caller call `finish` (`.end`). A failed write throws instead; the caller rethrows and Hummingbird
///    closes the connection, so no `.end` frames a short body.
///
/// **Descriptors**: the blob file's descriptor stays the `BlobFile`'s. Each call duplicates it into a
/// `NIOFileHandle` that only this call closes, after every write that used it has completed; NIO never closes
/// a `FileRegion`'s handle. An evicted (unlinked) file keeps its bytes while the descriptor is open, and the
/// caller's lease keeps eviction away until the body ends anyway.
enum BlobSendfile {
    /// Bytes per `FileRegion`. Each region costs one hop to the event loop and back; between regions the bytes
    /// already in the socket buffer keep the connection busy. The access log and the byte counters count whole
    /// regions sent, so an aborted response's count is short by at most this (16 MiB undercounted a client that
    /// hung up after 40 MB by 7 MB, and one after 4 MB by all of it).
    static let regionSize: Int64 = 2 << 20

    enum Outcome: Equatable {
        /// Every byte of the range was written to the socket.
        case sent
        /// This connection cannot take file regions (no `FileRegionWriter`, e.g. TLS) or the descriptor could not
        /// be duplicated; nothing was written.
        case unavailable
    }

    /// Writes `range` of `file` to `channel` as the body of the response whose head has been written.
    /// - Parameter sent: called with the bytes of each region once the kernel took them.
    /// - Throws: the write's error (the connection broke; `ChannelError.ioOnClosedChannel` and friends) after
    ///   some bytes may have gone out; the connection must not be reused. Cancellation closes the channel, so the
    ///   pending write fails and this returns promptly.
    static func write(_ file: BlobFile, range: ByteRange, to channel: any Channel, sent: (Int64) -> Void) async throws -> Outcome {
        // F_DUPFD_CLOEXEC: a descriptor of our own (a child process must not inherit it).
        let fd = fcntl(file.fd, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else { return .unavailable }
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
        // Runs after the last write completed (each `get()` below waits for completion, cancelled or not),
        // so NIO is done with the descriptor: the one close.
        defer { try? handle.close() }
        var offset = range.start
        let end = range.end + 1
        while offset < end {
            let count = min(regionSize, end - offset)
            let region = FileRegion(fileHandle: handle, readerIndex: Int(offset), endIndex: Int(offset + count))
            let first = offset == range.start
            let written: EventLoopFuture<Bool> = channel.eventLoop.flatSubmit {
                // On the loop, enqueued after the head's write (see "Ordering" above).
                guard let context = try? channel.pipeline.syncOperations.context(handlerType: FileRegionWriter.self) else {
                    // Gone mid-body only when the channel is being torn down.
                    return first ? channel.eventLoop.makeSucceededFuture(false) : channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel)
                }
                let promise = channel.eventLoop.makePromise(of: Void.self)
                context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.fileRegion(region))), promise: promise)
                return promise.futureResult.map { true }
            }
            // `get()` ignores cancellation: cut the connection instead, which fails the pending write.
            let wrote = try await withTaskCancellationHandler {
                try await written.get()
            } onCancel: {
                channel.close(promise: nil)
            }
            guard wrote else { return .unavailable }
            offset += count
            sent(count)
        }
        return .sent
    }
}
