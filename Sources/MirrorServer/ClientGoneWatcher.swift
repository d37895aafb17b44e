import BlobStore
import NIOCore

/// Fires a `ReaderGone` when the client connection ends: its input closes (Hummingbird allows half-closure, so
/// a client that hangs up shows as end of input, not as a closed channel) or the channel closes.
///
/// Added at the front of the pipeline only while a response waits on a fill in flight, then removed.
final class ClientGoneWatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny
    let gone: ReaderGone

    init(_ gone: ReaderGone) { self.gone = gone }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { gone.fire() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        gone.fire()
        context.fireChannelInactive()
    }

    /// Watches `channel` until `body` ends. A channel already closed fires at once.
    static func watching<T>(_ channel: any Channel, _ body: (ReaderGone) async throws -> T) async throws -> T {
        let gone = ReaderGone()
        let watcher = ClientGoneWatcher(gone)
        channel.closeFuture.whenComplete { _ in gone.fire() }
        try? await channel.pipeline.addHandler(watcher, position: .first).get()
        defer { channel.pipeline.removeHandler(watcher, promise: nil) }
        return try await body(gone)
    }
}
