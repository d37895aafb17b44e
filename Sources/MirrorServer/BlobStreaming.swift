import BlobStore
import Hummingbird
import Mirror
import NIOCore
import NIOPosix

/// Streams a byte range of a blob to a response body writer.
///
/// Where it cannot `sendfile` (TLS, or the newest bytes of a fill), it copies into buffers: `pread`s of up to
/// 256 KiB on NIO's blocking-I/O thread pool, so a cold disk never stalls an event loop, or, for bytes still in a
/// fill's ring, a memory copy on the task itself. Each response alternates between two buffers and reuses their
/// storage once the channel has let go of it: allocating a fresh buffer per chunk made glibc's per-thread arenas
/// grow to gigabytes with 32 clients (bench/RESULTS.md). A buffer is refilled only after the channel's event loop
/// has taken its last write (`BufferBox.taken`): the body writer returns as soon as it has queued a write for the
/// event loop, and while that loop was busy encrypting for other connections, TLS responses piled up to 20
/// queued 256 KiB chunks each (bench/RESULTS.md, "TLS: bounded queue"). From a fill in flight the writer sends whatever has
/// landed (and verified, for the last byte) and waits on the fill's notification for more; a failed fill throws,
/// which aborts the connection so the client never sees a complete body.
enum BlobStreaming {
    /// Largest single read, in bytes.
    static let chunkSize = 256 << 10
    /// Bytes a reader of a fill in flight waits for before it sends again, unless the blob ends sooner.
    static let wakeSize = 128 << 10
    /// Buffers a response fills in turn: one being read into while the event loop takes the other; also the
    /// most chunks per response that wait for the event loop. More measured no faster over TLS, and each costs
    /// `chunkSize` per connection (bench/RESULTS.md, "TLS: bounded queue").
    static let buffersPerResponse = 2

    /// Writes a blob's range with `sendfile(2)` (`BlobSendfile`) where it can: when the connection takes file
    /// regions (plaintext, `SendfileHTTP1Channel`), all of a committed file, and of a fill in flight the part
    /// already in its temp file; everything else with `pread` or a copy from the fill's ring (`write`). Bytes sent
    /// by `sendfile` are counted into the access record through `writer` (`BodyBytesCounting`), as if written to it,
    /// and into `cove_cache_sendfile_bytes_total`.
    /// - Parameter gone: fires when the client went away: a wait for fill bytes then ends.
    static func writeWithSendfile(_ body: BlobBody, range: ByteRange, to writer: inout any ResponseBodyWriter, channel: any Channel,
                                  metrics: MirrorMetrics, gone: ReaderGone? = nil) async throws {
        let counter = writer as? any BodyBytesCounting
        let sent: (Int64) -> Void = { n in
            counter?.countSent(n)
            metrics.servedWithSendfile.increment(by: n)
        }
        switch body {
        case .file(let file):
            if try await BlobSendfile.write(file, range: range, to: channel, sent: sent) == .sent { return }
            try await write(body, range: range, to: &writer, eventLoop: channel.eventLoop)
        case .fill(let fill):
            let stream = BlobSendfile.Stream(fd: fill.fd, channel: channel, sent: sent)
            if stream != nil { fill.beginFileReads() }
            defer {
                if let stream {
                    stream.close()
                    fill.endFileReads()
                }
            }
            try await write(body, range: range, to: &writer, eventLoop: channel.eventLoop, gone: gone, sendfile: stream)
        }
    }

    /// - Parameters:
    ///   - eventLoop: the event loop of the channel `writer` writes to; a buffer is refilled only once this loop has
    ///     run its last write through the pipeline, so no more than `buffersPerResponse` chunks per response wait
    ///     in its task queue (and the channel's writability, which then holds further writes back, is up to date).
    ///     `nil` leaves that wait out.
    ///   - gone: fires when the client went away: a wait for fill bytes then ends (`CancellationError`).
    ///   - sendfile: for a fill in flight on a connection that takes file regions: bytes already in the temp file
    ///     go out with `sendfile(2)` from it, the newest ones (still only in the fill's ring) are copied.
    static func write(_ body: BlobBody, range: ByteRange, to writer: inout any ResponseBodyWriter, eventLoop: (any EventLoop)? = nil,
                      gone: ReaderGone? = nil, sendfile: BlobSendfile.Stream? = nil) async throws {
        var offset = range.start
        let end = range.end + 1
        let capacity = Int(min(Int64(chunkSize), range.count))
        var boxes: [BufferBox] = []
        var next = 0
        var sendfile = sendfile
        while offset < end {
            var available = end
            if case .fill(let fill) = body {
                // Wake for a worthwhile amount (or the end), not for every small write of the transfer.
                available = min(end, try await fill.waitForBytes(atLeast: min(end, offset + Int64(wakeSize)), gone: gone))
                // Bytes the fill already wrote: from the page cache, no copy through this process.
                let inFile = min(available, fill.bytesInFile)
                if let stream = sendfile, inFile - offset >= Int64(wakeSize) || (inFile == end && inFile > offset) {
                    let upTo = min(inFile, offset + BlobSendfile.regionSize)
                    if try await stream.send(offset..<upTo) == .sent {
                        offset = upTo
                        continue
                    }
                    sendfile = nil
                }
            }
            if boxes.isEmpty { boxes = (0..<buffersPerResponse).map { _ in BufferBox(capacity: capacity) } }
            let count = Int(min(Int64(chunkSize), available - offset))
            let box = boxes[next]
            next = (next + 1) % boxes.count
            try await box.taken?.get()
            let at = offset
            // The newest bytes of a fill are in its ring: a memory copy, no trip to the blocking-I/O pool.
            var copied = false
            if case .fill(let fill) = body { copied = box.fillFromRing(fill, at: at, count: count) }
            if !copied { try await NIOThreadPool.singleton.runIfActive { try box.fill(from: body, at: at, count: count) } }
            let buffer = box.take()
            offset += Int64(buffer.readableBytes)
            try await writer.write(buffer)
            box.give(back: buffer)
            // Event loop tasks run in order: this one runs after the write the writer just queued.
            box.taken = eventLoop?.submit {}
        }
    }

    /// Holds a reusable buffer so the read closure can fill it in place without copying it (a captured
    /// `var` would share storage and force a copy-on-write allocation).
    final class BufferBox: @unchecked Sendable {
        private var buffer: ByteBuffer
        /// Completes once the channel's event loop has run the last write of this buffer through the pipeline
        /// (TLS has then encrypted it, and the storage is free to reuse); `nil` before the first write.
        var taken: EventLoopFuture<Void>?

        init(capacity: Int) { buffer = ByteBufferAllocator().buffer(capacity: capacity) }

        /// Replaces the contents with `count` bytes read at `offset`. Reuses the storage when nothing else
        /// still references it.
        func fill(from body: BlobBody, at offset: Int64, count: Int) throws {
            buffer.clear()
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { ptr in
                let target = UnsafeMutableRawBufferPointer(rebasing: ptr[0..<count])
                let n: Int
                switch body {
                case .file(let file): n = file.read(into: target, at: offset)
                case .fill(let fill): n = fill.read(into: target, at: offset)
                }
                return max(0, n)
            }
            guard n > 0 else { throw BlobReadError() }
        }

        /// Replaces the contents with bytes at `offset` copied from `fill`'s ring; false (contents undefined)
        /// when the ring does not hold them.
        func fillFromRing(_ fill: BlobFill, at offset: Int64, count: Int) -> Bool {
            buffer.clear()
            let n = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { ptr in
                max(0, fill.readRecent(into: UnsafeMutableRawBufferPointer(rebasing: ptr[0..<count]), at: offset) ?? 0)
            }
            return n > 0
        }

        func take() -> ByteBuffer {
            let b = buffer
            buffer = ByteBuffer()
            return b
        }

        func give(back b: ByteBuffer) { buffer = b }
    }

    struct BlobReadError: Error, CustomStringConvertible {
        var description: String { "blob file ended early or could not be read" }
    }
}
