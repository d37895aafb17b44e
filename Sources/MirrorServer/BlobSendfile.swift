import BlobStore
import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// Sends a byte range of a blob file (committed, or the part of a fill in flight already written) with
/// `sendfile(2)`: no userspace copy, no buffer memory.
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
/// **Descriptors**: the blob file's descriptor stays the `BlobFile`'s (or the `BlobFill`'s). Each response
/// duplicates it into a `NIOFileHandle` (`Stream`) that only it closes, after every write that used it has
/// completed; NIO never closes a `FileRegion`'s handle. An evicted (unlinked) file keeps its bytes while the
/// descriptor is open, and the caller's lease keeps eviction away until the body ends anyway.
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
    static func write(_ file: BlobFile, range: ByteRange, to channel: any Channel, sent: @escaping (Int64) -> Void) async throws -> Outcome {
        guard let stream = Stream(fd: file.fd, channel: channel, sent: sent) else { return .unavailable }
        defer { stream.close() }
        return try await stream.send(range.start..<(range.end + 1))
    }

    /// One response's regions of one file: a duplicated descriptor, written region by region. A reader of a fill
    /// in flight sends the part already in the temp file this way and the rest from memory, through the same
    /// connection, one after the other (ordering as above: a buffer written through the body writer is in the
    /// pipeline, or enqueued on the loop, before the next region is enqueued; a region's write completed before
    /// the next buffer is written).
    final class Stream {
        private let channel: any Channel
        private let handle: NIOFileHandle
        private let sent: (Int64) -> Void
        private var sentAny = false

        /// Duplicates `fd` (F_DUPFD_CLOEXEC: a descriptor of our own, which a child process must not inherit);
        /// nil when it cannot.
        init?(fd: Int32, channel: any Channel, sent: @escaping (Int64) -> Void) {
            let dup = fcntl(fd, F_DUPFD_CLOEXEC, 0)
            guard dup >= 0 else { return nil }
            handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: dup)
            self.channel = channel
            self.sent = sent
        }

        /// Closes the duplicate. Call once, after the last `send` returned: each `send` waits for its writes to
        /// complete (cancelled or not), so NIO is done with the descriptor; NIO never closes a `FileRegion`'s handle.
        func close() { try? handle.close() }

        /// Writes the file's bytes `range` (offsets) as regions of at most `regionSize`.
        /// - Returns: `.unavailable` when the connection takes no file regions and nothing was sent through this
        ///   stream yet; `.sent` once every byte was written to the socket.
        /// - Throws: the write's error; also `ChannelError.ioOnClosedChannel` when the `FileRegionWriter` is gone
        ///   after earlier regions (the channel is being torn down).
        func send(_ range: Range<Int64>) async throws -> Outcome {
            var offset = range.lowerBound
            while offset < range.upperBound {
                let count = min(regionSize, range.upperBound - offset)
                let region = FileRegion(fileHandle: handle, readerIndex: Int(offset), endIndex: Int(offset + count))
                let first = !sentAny
                let channel = channel
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
                sentAny = true
                offset += count
                sent(count)
            }
            return .sent
        }
    }
}
