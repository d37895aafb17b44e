import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OCI
import Synchronization

/// An in-process upstream registry for faults a real registry cannot produce: corrupt bytes, dropped
/// connections, ignored ranges, slow bodies, 429s, redirects to a CDN. It speaks the registry protocol
/// (`/v2/`, manifests, blobs with `Docker-Content-Digest`, `Content-Length`, ranges) and counts requests.
final class FaultUpstream: Sendable {
    enum Fault: Sendable {
        case none
        /// Same length, last byte flipped.
        case corrupt
        /// The first `times` GETs close the connection after `bytes` body bytes.
        case drop(after: Int, times: Int)
        /// Like `drop`, and range requests are answered 200 with the whole body.
        case dropAndIgnoreRange(after: Int)
        /// The body goes out in `chunk`-byte pieces with a pause of `milliseconds` between them.
        case slow(chunk: Int, milliseconds: Int)
        /// Every request answers `status` (e.g. 429 with `Retry-After: 7`).
        case status(Int)
        /// GETs redirect (307) to the CDN server, which refuses requests that carry `Authorization`.
        case redirectToCDN
    }

    struct Content: Sendable {
        var bytes: [UInt8]
        var mediaType: String
        var fault: Fault
    }

    struct Log: Sendable {
        var requests: [(method: String, path: String, range: String?, authorization: String?)] = []
    }

    let blobs = Mutex<[String: Content]>([:])
    let manifests = Mutex<[String: Content]>([:])  // keyed by "name:reference"
    let log = Mutex(Log())
    let cdnLog = Mutex(Log())
    /// When set, every /v2/ request needs this exact `Authorization` value (else 401 with a Basic challenge).
    let requiredAuthorization = Mutex<String?>(nil)
    private let server = Mutex<RunningServer?>(nil)
    private let cdn = Mutex<RunningServer?>(nil)

    var port: Int { server.withLock { $0!.port } }
    var url: String { "http://127.0.0.1:\(port)" }

    static func start() async throws -> FaultUpstream {
        let f = FaultUpstream()
        let s = try await RunningServer(Responder(upstream: f, isCDN: false), label: "fault-upstream")
        let c = try await RunningServer(Responder(upstream: f, isCDN: true), label: "fault-cdn")
        f.server.withLock { $0 = s }
        f.cdn.withLock { $0 = c }
        return f
    }

    func stop() {
        server.withLock { $0?.stop() }
        cdn.withLock { $0?.stop() }
    }

    /// Adds a blob and returns its digest.
    @discardableResult
    func addBlob(_ bytes: [UInt8], fault: Fault = .none) -> Digest {
        let d = Digest.sha256(of: bytes)
        blobs.withLock { $0[d.description] = Content(bytes: bytes, mediaType: "application/octet-stream", fault: fault) }
        return d
    }

    func setFault(_ digest: Digest, _ fault: Fault) {
        blobs.withLock { $0[digest.description]?.fault = fault }
    }

    /// Adds a manifest under `name` by tag and by digest; returns its digest.
    @discardableResult
    func addManifest(_ name: String, tag: String, body: [UInt8], mediaType: String = MediaType.ociManifest, fault: Fault = .none) -> Digest {
        let d = Digest.sha256(of: body)
        manifests.withLock {
            $0["\(name):\(tag)"] = Content(bytes: body, mediaType: mediaType, fault: fault)
            $0["\(name):\(d)"] = Content(bytes: body, mediaType: mediaType, fault: fault)
        }
        return d
    }

    /// Requests seen with `method` whose path contains `pathPart`.
    func count(_ method: String, _ pathPart: String) -> Int {
        log.withLock { $0.requests.filter { $0.method == method && $0.path.contains(pathPart) }.count }
    }

    func requests(_ method: String, _ pathPart: String) -> [(method: String, path: String, range: String?, authorization: String?)] {
        log.withLock { $0.requests.filter { $0.method == method && $0.path.contains(pathPart) } }
    }

    /// Random bytes that do not compress.
    static func randomBytes(_ count: Int) -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var out = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            var v = g.next()
            withUnsafeBytes(of: &v) { raw in
                for b in raw where i < count { out[i] = b; i += 1 }
            }
        }
        return out
    }

    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let upstream: FaultUpstream
        let isCDN: Bool

        func respond(to request: Request, context: Context) async throws -> Response {
            let path = request.uri.path
            let method = request.method.rawValue
            let auth = request.headers[.authorization]
            let entry = (method, path, request.headers[.range], auth)
            if isCDN {
                upstream.cdnLog.withLock { $0.requests.append(entry) }
                if auth != nil { return Response(status: .forbidden, body: .init(byteBuffer: ByteBuffer(string: "CDN: Authorization not allowed"))) }
                let digest = String(path.dropFirst("/cdn/".count))
                guard let blob = upstream.blobs.withLock({ $0[digest] }) else { return Response(status: .notFound) }
                return serve(blob.bytes, mediaType: blob.mediaType, digest: digest, fault: .none, request: request, attempt: 0)
            }
            let attempt = upstream.log.withLock { log -> Int in
                log.requests.append(entry)
                return log.requests.filter { $0.method == method && $0.path == path }.count - 1
            }
            if let required = upstream.requiredAuthorization.withLock({ $0 }), auth != required {
                return error(401, "UNAUTHORIZED", "authentication required", extra: [.wwwAuthenticate: "Basic realm=\"fault\""])
            }
            if path == "/v2/" { return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}"))) }
            if let r = path.range(of: "/blobs/") {
                let digest = String(path[r.upperBound...])
                guard let blob = upstream.blobs.withLock({ $0[digest] }) else { return error(404, "BLOB_UNKNOWN", "blob unknown") }
                if case .status(let s) = blob.fault { return error(s, s == 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE", "fault", extra: [.retryAfter: "7"]) }
                if case .redirectToCDN = blob.fault, request.method == .get {
                    return Response(status: .temporaryRedirect, headers: [.location: "http://127.0.0.1:\(upstream.cdn.withLock { $0!.port })/cdn/\(digest)"])
                }
                return serve(blob.bytes, mediaType: blob.mediaType, digest: digest, fault: blob.fault, request: request, attempt: attempt)
            }
            if let r = path.range(of: "/manifests/") {
                let name = String(path[path.index(path.startIndex, offsetBy: 4)..<r.lowerBound])
                let reference = String(path[r.upperBound...])
                guard let m = upstream.manifests.withLock({ $0["\(name):\(reference)"] }) else { return error(404, "MANIFEST_UNKNOWN", "manifest unknown") }
                if case .slow(_, let ms) = m.fault { try await Task.sleep(for: .milliseconds(ms)) }
                return serve(m.bytes, mediaType: m.mediaType, digest: Digest.sha256(of: m.bytes).description, fault: .none, request: request, attempt: attempt)
            }
            return error(404, "NAME_UNKNOWN", "no route")
        }

        func error(_ status: Int, _ code: String, _ message: String, extra: HTTPFields = [:]) -> Response {
            var headers: HTTPFields = [.contentType: "application/json"]
            headers.append(contentsOf: extra)
            return Response(status: .init(code: status), headers: headers,
                            body: .init(byteBuffer: ByteBuffer(string: #"{"errors":[{"code":"\#(code)","message":"\#(message)"}]}"#)))
        }

        func serve(_ original: [UInt8], mediaType: String, digest: String, fault: Fault, request: Request, attempt: Int) -> Response {
            var bytes = original
            if case .corrupt = fault, !bytes.isEmpty { bytes[bytes.count - 1] ^= 0xFF }
            var start = 0
            var status = HTTPResponse.Status.ok
            var headers: HTTPFields = [.contentType: mediaType, HTTPField.Name("Docker-Content-Digest")!: digest, .acceptRanges: "bytes"]
            var honourRange = true
            if case .dropAndIgnoreRange = fault { honourRange = false }
            if honourRange, let range = request.headers[.range], range.hasPrefix("bytes="), range.hasSuffix("-"),
               let s = Int(range.dropFirst(6).dropLast()), s < bytes.count {
                start = s
                status = .partialContent
                headers[.contentRange] = "bytes \(s)-\(bytes.count - 1)/\(bytes.count)"
            }
            let body = Array(bytes[start...])
            headers[.contentLength] = String(body.count)
            if request.method == .head { return Response(status: status, headers: headers, body: .init()) }
            var dropAfter: Int?
            switch fault {
            case .drop(let after, let times) where attempt < times: dropAfter = after
            case .dropAndIgnoreRange(let after) where attempt == 0: dropAfter = after
            default: break
            }
            var chunk = 64 * 1024, pause = 0
            if case .slow(let c, let ms) = fault { chunk = c; pause = ms }
            let (cut, size, wait) = (dropAfter, chunk, pause)
            return Response(status: status, headers: headers, body: .init(contentLength: body.count) { writer in
                var offset = 0
                while offset < body.count {
                    if let cut, offset >= cut { throw TestFailure("fault: dropping connection") }
                    var end = min(body.count, offset + size)
                    if let cut { end = min(end, cut) }
                    try await writer.write(ByteBuffer(bytes: body[offset..<end]))
                    offset = end
                    if wait > 0 { try await Task.sleep(for: .milliseconds(wait)) }
                }
                try await writer.finish(nil)
            })
        }
    }
}
