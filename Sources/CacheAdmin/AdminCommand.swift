import Foundation

/// One maintenance command that works the same whether it runs in the `cove` CLI process (no server holds the
/// storage) or inside a running `cove serve` (reached through its admin socket): both call `run` on a
/// `CacheAdmin`, so the answer is identical.
///
/// Adding a command (e.g. `gc`): declare a type conforming to this protocol with its `Request` and `Response`,
/// add it to `AdminCommands.all` (the server's dispatch table), and add a CLI subcommand that calls
/// `AdminChannel.run`.
public protocol AdminCommand: Sendable {
    /// What the client sends (JSON on the wire).
    associatedtype Request: Codable & Sendable
    /// What the command answers (JSON on the wire, rendered as text by the CLI).
    associatedtype Response: AdminResponse
    /// The command's name on the wire: the server answers it at `POST /v1/<name>`.
    static var name: String { get }
    /// Performs the command on `cache`.
    /// - Throws: any error; the server answers it as a 500 whose message the CLI prints.
    static func run(_ request: Request, on cache: CacheAdmin) async throws -> Response
}

/// An admin command's answer.
public protocol AdminResponse: Codable, Sendable {
    /// The CLI's exit status for this answer (0: fine; 1: the command found problems, e.g. `verify`).
    var exitStatus: Int32 { get }
    /// The human-readable rendering the CLI prints (without `--json`), ending without a newline.
    var text: String { get }
}

extension AdminResponse {
    public var exitStatus: Int32 { 0 }
}

/// The commands a running server answers on its admin socket.
public enum AdminCommands {
    /// The dispatch table: one entry per command. Add new commands here.
    public static let all: [any AdminCommand.Type] = [VerifyCommand.self, StatsCommand.self, ListCommand.self,
                                                      GCCommand.self, PinCommand.self, UnpinCommand.self,
                                                      PreloadCommand.self, PreloadStatusCommand.self, ImportCommand.self]

    /// Decodes a request body, runs the command, encodes its answer.
    typealias Handler = @Sendable (Data, CacheAdmin) async throws -> Data

    static let handlers: [String: Handler] = {
        var out: [String: Handler] = [:]
        for command in all { out[command.name] = handler(command) }
        return out
    }()

    private static func handler<C: AdminCommand>(_ command: C.Type) -> Handler {
        { body, cache in
            let request = try AdminCoding.decoder.decode(C.Request.self, from: body)
            return try AdminCoding.encoder.encode(try await C.run(request, on: cache))
        }
    }
}

/// The JSON coding both ends of the admin socket use (ISO 8601 dates, sorted keys for stable output).
public enum AdminCoding {
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }

    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}

/// The body of a non-200 answer on the admin socket.
struct AdminFailureBody: Codable {
    var error: String
}
