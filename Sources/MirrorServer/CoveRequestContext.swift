import Hummingbird
import NIOCore

/// The request context of Cove's HTTP front: Hummingbird's core context plus the connection's channel, so a
/// response streaming from a fill in flight can tell when its client went away.
public struct CoveRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client connection.
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}
