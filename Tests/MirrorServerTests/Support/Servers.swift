import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs a Hummingbird responder on `host` (127.0.0.1 unless told; any 127.0.0.0/8 address works on Linux) with an
/// OS-chosen port until `stop()`.
final class RunningServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>
    /// The listening socket, closed before the server task is cancelled (see `stop()`).
    private let listener = ListenerBox()

    /// - Parameter server: the child channel (default Hummingbird's plain HTTP/1.1; Cove's uses `.http1Sendfile()`).
    init<R: HTTPResponder>(_ responder: R, label: String, host: String = "127.0.0.1", server: HTTPServerBuilder = .http1()) async throws
    where R.Context: InitializableFromSource<ApplicationRequestContextSource> {
        _ = Self.raisedFileLimit
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: label)
        logger.logLevel = ProcessInfo.processInfo.environment["COVE_TEST_LOG"] == nil ? .critical : .debug
        let app = Application(
            responder: responder,
            server: server,
            configuration: .init(address: .hostname(host, port: 0), serverName: nil),
            onServerRunning: { [listener] channel in
                listener.channel.withLock { $0 = channel }
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

    /// Stops accepting at once, then cancels the server (which cuts open connections) a moment later.
    /// Cancelling while a connection is being accepted drops its `NIOAsyncChannel` before the server loop takes
    /// it, which NIO traps on ("Deinited NIOAsyncWriter without calling finish()", seen when background fills
    /// connect to a fixture as its test ends); with the listener closed first, the loop takes what it accepted.
    func stop() {
        guard let channel = listener.channel.withLock({ $0 }) else { task.cancel(); return }
        let task = self.task
        Task {
            try? await channel.close()
            try? await Task.sleep(for: .milliseconds(50))
            task.cancel()
        }
    }

    /// Raises this test process's open-file soft limit to the hard limit once, as `cove serve` does for itself:
    /// the suites run many servers, clients and fills at once in one process, and at the usual 1024 an `open`
    /// can fail with EMFILE (seen as a bundle write failing with EBADF on a descriptor of -1).
    private static let raisedFileLimit: Void = {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }()
    deinit { task.cancel() }
}

/// Holds a server's listening channel once it runs.
private final class ListenerBox: Sendable {
    let channel = Mutex<(any Channel)?>(nil)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
