import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// Runs a Hummingbird responder on `host` (127.0.0.1 unless told; any 127.0.0.0/8 address works on Linux) with an
/// OS-chosen port until `stop()`.
final class RunningServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    init<R: HTTPResponder>(_ responder: R, label: String, host: String = "127.0.0.1") async throws where R.Context: InitializableFromSource<ApplicationRequestContextSource> {
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: label)
        logger.logLevel = ProcessInfo.processInfo.environment["COVE_TEST_LOG"] == nil ? .critical : .debug
        let app = Application(
            responder: responder,
            configuration: .init(address: .hostname(host, port: 0), serverName: nil),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: logger
        )
        task = Task { try await app.run() }
        var it = portStream.makeAsyncIterator()
        guard let port = await it.next(), port > 0 else { throw TestFailure("server \(label) did not start") }
        self.port = port
    }

    func stop() { task.cancel() }
    deinit { task.cancel() }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
