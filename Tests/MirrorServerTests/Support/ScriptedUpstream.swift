import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// An HTTP server whose answers a test scripts, for upstream behaviour no registry fixture has: a web server or
/// captive portal answering `200 text/html` to everything, a token realm that sends HTML, registries that page
/// tag lists with absolute `Link` URLs, schema 1 manifests, the referrers API. The script sees each request and
/// returns status, headers and body; every request is recorded.
final class ScriptedUpstream: Sendable {
    struct Exchange: Sendable {
        var method: String
        var path: String
        /// The raw query string, "" for none.
        var query: String
        var headers: [String: String]
    }

    struct Answer: Sendable {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]

        init(_ status: Int, _ headers: [(String, String)] = [], _ body: [UInt8] = []) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        init(_ status: Int, _ headers: [(String, String)] = [], text: String) {
            self.init(status, headers, Array(text.utf8))
        }

        /// A registry error envelope.
        static func error(_ status: Int, _ code: String, _ message: String = "scripted") -> Answer {
            Answer(status, [("Content-Type", "application/json")], text: #"{"errors":[{"code":"\#(code)","message":"\#(message)"}]}"#)
        }
    }

    typealias Script = @Sendable (Exchange) -> Answer

    private let script: Mutex<Script>
    private let exchanges = Mutex<[Exchange]>([])
    private let server = Mutex<RunningServer?>(nil)

    var port: Int { server.withLock { $0!.port } }
    var url: String { "http://127.0.0.1:\(port)" }

    private init(script: @escaping Script) { self.script = Mutex(script) }

    static func start(_ script: @escaping Script) async throws -> ScriptedUpstream {
        let s = ScriptedUpstream(script: script)
        let running = try await RunningServer(Responder(upstream: s), label: "scripted-upstream")
        s.server.withLock { $0 = running }
        return s
    }

    func setScript(_ script: @escaping Script) { self.script.withLock { $0 = script } }
    func stop() { server.withLock { $0?.stop() } }

    /// Every request so far.
    var requests: [Exchange] { exchanges.withLock { $0 } }

    /// Requests whose path contains `part`.
    func requests(containing part: String) -> [Exchange] { requests.filter { $0.path.contains(part) } }

    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let upstream: ScriptedUpstream

        func respond(to request: Request, context: Context) async throws -> Response {
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let exchange = Exchange(method: request.method.rawValue, path: request.uri.path, query: request.uri.query ?? "", headers: headers)
            upstream.exchanges.withLock { $0.append(exchange) }
            let answer = upstream.script.withLock { $0 }(exchange)
            var fields = HTTPFields()
            for (name, value) in answer.headers { if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) } }
            fields[.contentLength] = String(answer.body.count)
            let body = request.method == .head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body))
            return Response(status: .init(code: answer.status), headers: fields, body: body)
        }
    }
}
