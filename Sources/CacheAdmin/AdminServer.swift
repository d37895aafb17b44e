import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Answers admin commands over HTTP: `POST /v1/<command>` with the command's JSON request; 200 with its JSON
/// response, 404 for an unknown command, 400 for a request that does not decode, 500 when the command threw
/// (`{"error": "..."}` for all three).
public struct AdminResponder: HTTPResponder {
    public typealias Context = BasicRequestContext
    let cache: CacheAdmin
    let logger: Logger

    public init(cache: CacheAdmin, logger: Logger) {
        self.cache = cache
        self.logger = logger
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/v1/") else { return Self.failure(.notFound, "no such endpoint: \(path.prefix(100))") }
        let name = String(path.dropFirst(4))
        guard let handler = AdminCommands.handlers[name] else { return Self.failure(.notFound, "unknown command \(name.prefix(100))") }
        guard request.method == .post else { return Self.failure(.methodNotAllowed, "use POST") }
        let body = Data(buffer: try await request.body.collect(upTo: 1 << 20))
        let started = ContinuousClock.now
        do {
            let out = try await handler(body, cache)
            // Status polls (every 500 ms during a preload) would flood the log at notice.
            logger.log(level: name.hasSuffix("-status") ? .debug : .notice, "admin command",
                       metadata: ["command": "\(name)", "elapsed": "\(ContinuousClock.now - started)"])
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: out)))
        } catch is DecodingError {
            return Self.failure(.badRequest, "cannot decode the \(name) request")
        } catch {
            logger.error("admin command failed", metadata: ["command": "\(name)", "error": "\(error)"])
            return Self.failure(.internalServerError, "\(error)")
        }
    }

    static func failure(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let body = (try? JSONEncoder().encode(AdminFailureBody(error: message))) ?? Data()
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// The admin socket as a service of `cove serve`'s `ServiceGroup`: HTTP/1.1 on the Unix domain socket
/// `<storage>/admin.sock`, mode 0600 (only the server's user may connect), replacing a stale socket left by a
/// killed server (the storage lock, held by this process, proves no live server owns it) and removed on
/// shutdown.
public struct AdminSocketService: Service {
    let path: String
    let cache: CacheAdmin
    let logger: Logger
    let onRunning: @Sendable () -> Void

    /// Longest socket path Linux accepts (`sun_path` is 108 bytes with the terminating NUL).
    public static let maxPathBytes = 107

    /// - Parameter onRunning: called once the socket accepts connections (tests wait for it).
    public init(path: String, cache: CacheAdmin, logger: Logger, onRunning: @escaping @Sendable () -> Void = {}) {
        self.path = path
        self.cache = cache
        self.logger = logger
        self.onRunning = onRunning
    }

    public func run() async throws {
        guard path.utf8.count <= Self.maxPathBytes else {
            // Serving must not fail for this: the commands then tell the operator what is wrong.
            logger.error("admin socket path is too long for a Unix socket; cove verify/stats/ls cannot reach this server",
                         metadata: ["path": "\(path)", "max_bytes": "\(Self.maxPathBytes)"])
            try? await gracefulShutdown()
            return
        }
        let (path, logger, onRunning) = (self.path, self.logger, self.onRunning)
        let app = Application(
            responder: AdminResponder(cache: cache, logger: logger),
            configuration: .init(address: .unixDomainSocket(path: path), serverName: nil),
            onServerRunning: { _ in
                // Hummingbird binds with the process umask; narrow it at once (the socket's directory, the
                // storage, is the server's own too).
                if chmod(path, 0o600) != 0 {
                    logger.error("cannot restrict the admin socket's mode", metadata: ["path": "\(path)", "errno": "\(errno)"])
                }
                logger.notice("admin socket listening", metadata: ["path": "\(path)"])
                onRunning()
            },
            logger: logger
        )
        defer { unlink(path) }
        try await app.run()
    }
}
