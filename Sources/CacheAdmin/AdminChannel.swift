import BlobStore
import Foundation

/// How a maintenance command reaches the cache: in this process when it can take the storage lock (no server
/// runs, and none can start meanwhile), else through the running server's admin socket.
public enum AdminChannel {
    /// Where the command ran.
    public enum Route: String, Sendable {
        case inProcess = "in-process"
        case server
    }

    /// The admin socket of the server owning `storage`: `<storage>/admin.sock`.
    public static func socketPath(storage: URL) -> String {
        storage.standardizedFileURL.path + "/admin.sock"
    }

    /// Runs `command` with `request` against the cache at `storage`.
    ///
    /// Tries the storage lock first (non-blocking); if a server holds it, sends the request over the admin
    /// socket. A server that is starting (lock taken, socket not yet bound) or stopping is retried every 100 ms
    /// for `patience` seconds.
    /// - Parameter open: opens the cache in this process (default `CacheAdmin.openInProcess`); must throw
    ///   `BlobStoreError.inUse` when the storage is locked.
    /// - Returns: the answer and where it was computed.
    /// - Throws: `AdminError` when neither path works; the server's error or the command's error otherwise.
    public static func run<C: AdminCommand>(
        _ command: C.Type, _ request: C.Request, storage: URL, patience: Double = 5,
        open: (URL) throws -> CacheAdmin = CacheAdmin.openInProcess
    ) async throws -> (response: C.Response, route: Route) {
        let socket = socketPath(storage: storage)
        let body = try AdminCoding.encoder.encode(request)
        let deadline = ContinuousClock.now + .milliseconds(Int(patience * 1000))
        var lastFailure = "no attempt"
        while true {
            do {
                let cache = try open(storage)
                defer { cache.close() }
                return (try await C.run(request, on: cache), .inProcess)
            } catch BlobStoreError.inUse(_) {
                // A server (or another command) holds the storage: ask it.
            }
            do {
                return (try await ask(command, body: body, socket: socket), .server)
            } catch AdminClient.Failure.unreachable(let why) {
                lastFailure = why
            } catch AdminClient.Failure.protocolError(let why) {
                // The server took the request and the connection broke (it died or stopped): it may have run part
                // of the command. Taking the storage over and running it again here would surprise the operator
                // and hold the lock a restarted server needs.
                throw AdminError.server(0, "the connection to the server broke during \(C.name) (\(why)); it may have run in part — check with cove stats or cove verify, then run it again")
            }
            guard ContinuousClock.now < deadline else { throw AdminError.serverUnreachable(socket, lastFailure) }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Runs `command` in the server owning `storage`, through its admin socket only (the caller found the storage
    /// locked), retrying every 100 ms for `patience` seconds while nothing answers.
    /// - Throws: `AdminError` when no server answers, or for its error answers.
    public static func runOnServer<C: AdminCommand>(_ command: C.Type, _ request: C.Request, storage: URL,
                                                    patience: Double = 5) async throws -> C.Response {
        let socket = socketPath(storage: storage)
        let body = try AdminCoding.encoder.encode(request)
        let deadline = ContinuousClock.now + .milliseconds(Int(patience * 1000))
        while true {
            let why: String
            do {
                return try await ask(command, body: body, socket: socket)
            } catch AdminClient.Failure.unreachable(let w) {
                why = w
            } catch AdminClient.Failure.protocolError(let w) {
                why = w
            }
            guard ContinuousClock.now < deadline else { throw AdminError.serverUnreachable(socket, why) }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    /// One request over the socket.
    /// - Throws: `AdminClient.Failure` when nothing answers; `AdminError` for an error answer.
    private static func ask<C: AdminCommand>(_ command: C.Type, body: Data, socket: String) async throws -> C.Response {
        let (status, data) = try await AdminClient.post(socketPath: socket, command: C.name, body: body)
        switch status {
        case 200: return try AdminCoding.decoder.decode(C.Response.self, from: data)
        case 404 where String(decoding: data, as: UTF8.self).contains("unknown command"): throw AdminError.unknownCommand(C.name)
        default:
            let message = (try? JSONDecoder().decode(AdminFailureBody.self, from: data))?.error ?? String(decoding: data.prefix(500), as: UTF8.self)
            throw AdminError.server(status, message)
        }
    }
}
