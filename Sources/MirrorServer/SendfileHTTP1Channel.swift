import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// Hummingbird's plaintext HTTP/1.1 child channel plus a `FileRegionWriter` in its pipeline, so cached blobs can
/// go to the socket with `sendfile(2)` (`BlobSendfile`).
///
/// Plaintext only: every handler between the `FileRegionWriter` and the socket must accept a `FileRegion`.
/// `NIOSSLHandler` takes `ByteBuffer`s only, so a TLS listener wraps Hummingbird's own `HTTP1Channel`
/// (cove's `ReloadableTLSChannel`), never this one; its connections have no `FileRegionWriter` and blob bodies
/// keep the `pread` path (`BlobStreaming`).
public struct SendfileHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    public typealias Value = HTTP1Channel.Value
    let base: HTTP1Channel

    public var responder: HTTPChannelHandler.Responder { base.responder }

    /// - Parameter configuration: as for Hummingbird's `HTTP1Channel`.
    public init(responder: @escaping HTTPChannelHandler.Responder, configuration: HTTP1Channel.Configuration = .init()) {
        base = HTTP1Channel(responder: responder, configuration: configuration)
    }

    /// Sets up Hummingbird's HTTP/1.1 pipeline, then puts a `FileRegionWriter` right above its
    /// `HTTPResponseEncoder`. Runs on the channel's event loop (Hummingbird calls it from the child channel
    /// initializer), where `syncOperations` are allowed.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        base.setup(channel: channel, logger: logger).flatMapThrowing { value in
            let pipeline = channel.pipeline.syncOperations
            let encoder = try pipeline.handler(type: HTTPResponseEncoder.self)
            try pipeline.addHandler(FileRegionWriter(), position: .after(encoder))
            return value
        }
    }

    public func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// Plaintext HTTP/1.1 whose cached blob bodies are sent with `sendfile(2)` (`SendfileHTTP1Channel`).
    /// Not for TLS: wrap Hummingbird's `HTTP1Channel` there.
    public static func http1Sendfile(configuration: HTTP1Channel.Configuration = .init()) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in SendfileHTTP1Channel(responder: responder, configuration: configuration) }
    }
}

/// An anchor in the HTTP/1.1 pipeline, between Hummingbird's `HTTP1ToHTTPServerCodec` and NIO's
/// `HTTPResponseEncoder`: `BlobSendfile` writes `HTTPServerResponsePart.body(.fileRegion)` through this
/// handler's context, so the region enters the pipeline below Hummingbird's `ByteBuffer`-only body writer and
/// is framed by the encoder like any body part. Everything else passes through untouched.
final class FileRegionWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
}
