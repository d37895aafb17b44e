import BlobStore
import Hummingbird
import Mirror
import NIOCore
import NIOPosix

/// Streams a byte range of a blob to a response body writer.
///
/// Reads are large (up to 1 MiB) `pread`s on NIO's blocking-I/O thread pool, so a cold disk never stalls an
/// event loop. From a fill in flight the writer sends whatever has landed (and verified, for the last byte)
/// and waits on the fill's notification for more; a failed fill throws, which aborts the connection so the
/// client never sees a complete body.
enum BlobStreaming {
    /// Largest single read, in bytes.
    static let chunkSize = 1 << 20

    static func write(_ body: BlobBody, range: ByteRange, to writer: inout any ResponseBodyWriter) async throws {
        var offset = range.start
        let end = range.end + 1
        while offset < end {
            var available = end
            if case .fill(let fill) = body {
                available = min(end, try await fill.waitForBytes(atLeast: offset + 1))
            }
            let count = Int(min(Int64(chunkSize), available - offset))
            let buffer = try await read(body, at: offset, count: count)
            offset += Int64(buffer.readableBytes)
            try await writer.write(buffer)
        }
    }

    private static func read(_ body: BlobBody, at offset: Int64, count: Int) async throws -> ByteBuffer {
        try await NIOThreadPool.singleton.runIfActive {
            var buffer = ByteBufferAllocator().buffer(capacity: count)
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
            return buffer
        }
    }

    struct BlobReadError: Error, CustomStringConvertible {
        var description: String { "blob file ended early or could not be read" }
    }
}
