import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OCI
import Synchronization

/// An in-process upstream registry for faults a real registry cannot produce: corrupt bytes, dropped
/// connections, ignored ranges, slow bodies, 429s, redirects to a CDN. It speaks the registry protocol
/// (`/v2/`, manifests, blobs with `Docker-Content-Digest`, `Content-Length`, ranges, tag lists) and counts requests.
///
/// Optional behaviours make it act like a particular real upstream:
/// - `bearer`: Docker token auth against a `TokenRealm` (401 + `WWW-Authenticate: Bearer realm=,service=,scope=`
///   for a missing, unknown, expired or insufficient token);
/// - `pullLimit`: Docker Hub's `ratelimit-limit` / `ratelimit-remaining` / `docker-ratelimit-source` headers on
///   manifest responses and a 429 `TOOMANYREQUESTS` with `Retry-After` once N manifest GETs were served;
/// - `everyRequest`: the whole endpoint answers a status (5xx, 429) or hangs;
/// - `pathStatus`: one exact path answers a status (a 5xx only that path gets);
/// - like distribution 2.8, a manifest GET/HEAD by the digest of a *blob* it holds answers 500 `UNKNOWN`;
/// - `.redirectToCDN` blobs: 307 to a CDN port with a signed, single-use URL; the CDN refuses `Authorization`.
final class FaultUpstream: Sendable {
    enum Fault: Sendable {
        case none
        /// Same length, last byte flipped.
        case corrupt
        /// Same length, the middle byte flipped; the body goes out like `.slow(chunk:milliseconds:)`.
        case corruptMiddle(chunk: Int, milliseconds: Int)
        /// No `Content-Length`: the body goes out with chunked transfer encoding in `chunk`-byte pieces, with a
        /// pause of `milliseconds` between them.
        case chunked(chunk: Int, milliseconds: Int)
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
        /// (As a CDN fault) accept the request and answer nothing for `seconds`.
        case hang(seconds: Double)
    }

    struct Content: Sendable {
        var bytes: [UInt8]
        var mediaType: String
        var fault: Fault
        var cdnFault: Fault = .none
    }

    /// One request as the fixture saw it.
    struct Entry: Sendable {
        var method: String
        var path: String
        var query: String?
        var range: String?
        var authorization: String?
        /// What the bearer gate thought of the token (nil without a gate).
        var tokenCheck: TokenRealm.Check?
    }

    struct Log: Sendable {
        var requests: [Entry] = []
    }

    /// Behaviour of the whole endpoint, before any auth or routing.
    enum EveryRequest: Sendable {
        /// Answer `status` with a registry error body (and `Retry-After` if given).
        case status(Int, retryAfter: String?)
        /// Accept the request and answer nothing for `seconds`.
        case hang(seconds: Double)
    }

    /// Docker token auth: which realm issues the tokens this registry accepts.
    struct BearerGate: Sendable {
        var realm: TokenRealm
        /// The realm URL put in the challenge (default: the realm's own URL).
        var realmURL: String?
        var service: String = "registry.docker.io"
        /// The `scope` of a challenge for a repository (nil: omit the scope parameter). Default: its pull scope.
        var challengeScope: @Sendable (String) -> String? = { "repository:\($0):pull" }
    }

    /// Docker Hub's pull limit: manifest GETs count; after `limit` of them, GETs answer 429.
    struct PullLimit: Sendable {
        var limit: Int
        var retryAfter: String = "3"
        var source: String = "127.0.0.1"
        var window: Int = 21600
        var used = 0
        var remaining: Int { max(0, limit - used) }
    }

    let blobs = Mutex<[String: Content]>([:])
    let manifests = Mutex<[String: Content]>([:])  // keyed by "name:reference"
    let log = Mutex(Log())
    let cdnLog = Mutex(Log())
    /// When set, every /v2/ request needs this exact `Authorization` value (else 401 with a Basic challenge).
    let requiredAuthorization = Mutex<String?>(nil)
    let everyRequest = Mutex<EveryRequest?>(nil)
    /// Exact request path → status answered for it (with a registry error body), after `everyRequest`.
    let pathStatus = Mutex<[String: Int]>([:])
    /// Exact request path → seconds to hang before answering 503 (a path-specific stall).
    let pathHang = Mutex<[String: Double]>([:])
    let bearer = Mutex<BearerGate?>(nil)
    let pullLimit = Mutex<PullLimit?>(nil)
    /// CDN signatures handed out in redirects and not used yet (single use, like signed CDN URLs).
    let cdnSignatures = Mutex<Set<String>>([])
    /// A name for `sequence`.
    let label: String
    /// When set, every request (registry and CDN) is appended here as "label METHOD path", so tests can see the
    /// order in which several fixtures were contacted.
    let sequence: SequenceLog?
    let host: String
    private let server = Mutex<RunningServer?>(nil)
    private let cdn = Mutex<RunningServer?>(nil)

    var port: Int { server.withLock { $0!.port } }
    var url: String { "http://\(host):\(port)" }
    var cdnPort: Int { cdn.withLock { $0!.port } }

    private init(label: String, host: String, sequence: SequenceLog?) {
        self.label = label
        self.host = host
        self.sequence = sequence
    }

    static func start(label: String = "upstream", host: String = "127.0.0.1", sequence: SequenceLog? = nil) async throws -> FaultUpstream {
        let f = FaultUpstream(label: label, host: host, sequence: sequence)
        let s = try await RunningServer(Responder(upstream: f, isCDN: false), label: "fault-upstream", host: host)
        let c = try await RunningServer(Responder(upstream: f, isCDN: true), label: "fault-cdn", host: host)
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

    /// How the CDN serves a redirected blob (e.g. `.drop` to cut the first transfer).
    func setCDNFault(_ digest: Digest, _ fault: Fault) {
        blobs.withLock { $0[digest.description]?.cdnFault = fault }
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

    func requests(_ method: String, _ pathPart: String) -> [Entry] {
        log.withLock { $0.requests.filter { $0.method == method && $0.path.contains(pathPart) } }
    }

    /// Every request the registry port saw.
    var allRequests: [Entry] { log.withLock { $0.requests } }

    /// Every request the CDN port saw.
    var cdnRequests: [Entry] { cdnLog.withLock { $0.requests } }

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
            var entry = Entry(method: method, path: path, query: request.uri.query, range: request.headers[.range], authorization: auth)
            upstream.sequence?.append("\(upstream.label)\(isCDN ? "-cdn" : "") \(method) \(path)")
            if isCDN {
                upstream.cdnLog.withLock { $0.requests.append(entry) }
                if auth != nil { return Response(status: .forbidden, body: .init(byteBuffer: ByteBuffer(string: "CDN: Authorization not allowed"))) }
                let digest = String(path.dropFirst("/cdn/".count))
                let signature = request.uri.queryParameters["sig"].map(String.init) ?? ""
                guard upstream.cdnSignatures.withLock({ $0.remove(signature) }) != nil else {
                    return Response(status: .forbidden, body: .init(byteBuffer: ByteBuffer(string: "CDN: signature unknown or already used")))
                }
                guard let blob = upstream.blobs.withLock({ $0[digest] }) else { return Response(status: .notFound) }
                let attempt = upstream.cdnLog.withLock { $0.requests.filter { $0.path == path }.count - 1 }
                if case .hang(let seconds) = blob.cdnFault {
                    try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                    return Response(status: .serviceUnavailable)
                }
                return serve(blob.bytes, mediaType: blob.mediaType, digest: digest, fault: blob.cdnFault, request: request, attempt: attempt)
            }
            // The repository a /v2/<name>/... path is about (nil for /v2/ itself).
            var repository: String?
            for marker in ["/manifests/", "/blobs/", "/tags/list"] {
                guard let r = path.range(of: marker, options: .backwards), path.hasPrefix("/v2/") else { continue }
                repository = String(path[path.index(path.startIndex, offsetBy: 4)..<r.lowerBound])
                break
            }
            let gate = upstream.bearer.withLock { $0 }
            if let gate { entry.tokenCheck = gate.realm.check(auth, repository: repository) }
            let attempt = upstream.log.withLock { log -> Int in
                log.requests.append(entry)
                return log.requests.filter { $0.method == method && $0.path == path }.count - 1
            }
            switch upstream.everyRequest.withLock({ $0 }) {
            case .status(let s, let retryAfter)?:
                return error(s, s == 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE", "endpoint fault", extra: retryAfter.map { [.retryAfter: $0] } ?? [:])
            case .hang(let seconds)?:
                try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return error(503, "UNAVAILABLE", "endpoint hung")
            case nil: break
            }
            if let s = upstream.pathStatus.withLock({ $0[path] }) {
                return error(s, s == 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE", "path fault")
            }
            if let seconds = upstream.pathHang.withLock({ $0[path] }) {
                try await Task.sleep(for: .milliseconds(Int(seconds * 1000)))
                return error(503, "UNAVAILABLE", "path hung")
            }
            if let required = upstream.requiredAuthorization.withLock({ $0 }), auth != required {
                return error(401, "UNAUTHORIZED", "authentication required", extra: [.wwwAuthenticate: "Basic realm=\"fault\""])
            }
            if let gate, let check = entry.tokenCheck, check != .valid {
                var challenge = #"Bearer realm="\#(gate.realmURL ?? gate.realm.url)",service="\#(gate.service)""#
                if let repository, let scope = gate.challengeScope(repository) { challenge += #",scope="\#(scope)""# }
                if check == .expired || check == .unknown { challenge += #",error="invalid_token""# }
                if check == .insufficientScope { challenge += #",error="insufficient_scope""# }
                return error(401, "UNAUTHORIZED", "authentication required", extra: [.wwwAuthenticate: challenge])
            }
            if path == "/v2/" { return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{}"))) }
            if path.hasSuffix("/tags/list"), let repository {
                return tagList(repository, query: request.uri.query)
            }
            if let r = path.range(of: "/blobs/") {
                let digest = String(path[r.upperBound...])
                guard let blob = upstream.blobs.withLock({ $0[digest] }) else { return error(404, "BLOB_UNKNOWN", "blob unknown") }
                if case .status(let s) = blob.fault { return error(s, s == 429 ? "TOOMANYREQUESTS" : "UNAVAILABLE", "fault", extra: [.retryAfter: "7"]) }
                if case .redirectToCDN = blob.fault, request.method == .get {
                    let signature = UUID().uuidString
                    upstream.cdnSignatures.withLock { _ = $0.insert(signature) }
                    return Response(status: .temporaryRedirect,
                                    headers: [.location: "http://\(upstream.host):\(upstream.cdnPort)/cdn/\(digest)?sig=\(signature)"])
                }
                return serve(blob.bytes, mediaType: blob.mediaType, digest: digest, fault: blob.fault, request: request, attempt: attempt)
            }
            if let r = path.range(of: "/manifests/") {
                let name = String(path[path.index(path.startIndex, offsetBy: 4)..<r.lowerBound])
                let reference = String(path[r.upperBound...])
                // Docker Hub: manifest GETs count against the pull limit (HEADs do not); past it, 429.
                var limitHeaders: HTTPFields = [:]
                if upstream.pullLimit.withLock({ $0 }) != nil {
                    let exists = upstream.manifests.withLock { $0["\(name):\(reference)"] } != nil
                    let (state, refused) = upstream.pullLimit.withLock { limit -> (PullLimit, Bool) in
                        if request.method == .get {
                            if limit!.remaining == 0 { return (limit!, true) }
                            if exists { limit!.used += 1 }
                        }
                        return (limit!, false)
                    }
                    limitHeaders = [HTTPField.Name("ratelimit-limit")!: "\(state.limit);w=\(state.window)",
                                    HTTPField.Name("ratelimit-remaining")!: "\(state.remaining);w=\(state.window)",
                                    HTTPField.Name("docker-ratelimit-source")!: state.source]
                    if refused {
                        var extra = limitHeaders
                        extra[.retryAfter] = state.retryAfter
                        return error(429, "TOOMANYREQUESTS", "You have reached your pull rate limit.", extra: extra)
                    }
                }
                guard let m = upstream.manifests.withLock({ $0["\(name):\(reference)"] }) else {
                    // distribution 2.8 (checked against Debian's docker-registry): a blob's digest asked for as a
                    // manifest is read as a manifest and fails to parse: 500 UNKNOWN, not 404.
                    if upstream.blobs.withLock({ $0[reference] }) != nil { return error(500, "UNKNOWN", "unknown error") }
                    return error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                }
                if case .slow(_, let ms) = m.fault { try await Task.sleep(for: .milliseconds(ms)) }
                var response = serve(m.bytes, mediaType: m.mediaType, digest: Digest.sha256(of: m.bytes).description, fault: .none, request: request, attempt: attempt)
                response.headers.append(contentsOf: limitHeaders)
                return response
            }
            return error(404, "NAME_UNKNOWN", "no route")
        }

        /// `GET /v2/<name>/tags/list[?n=&last=]`, paginated with a relative `Link` like distribution.
        func tagList(_ name: String, query: String?) -> Response {
            let params = TokenRealm.parseQuery(query ?? "")
            let n = params.first { $0.0 == "n" }.flatMap { Int($0.1) }
            let last = params.first { $0.0 == "last" }?.1
            var tags = upstream.manifests.withLock { m in
                m.keys.filter { $0.hasPrefix(name + ":") }.map { String($0.dropFirst(name.count + 1)) }.filter { !$0.contains(":") }
            }.sorted()
            guard !tags.isEmpty else { return error(404, "NAME_UNKNOWN", "repository name not known to registry") }
            if let last { tags = tags.filter { $0 > last } }
            var headers: HTTPFields = [.contentType: "application/json"]
            if let n, tags.count > n {
                tags = Array(tags.prefix(n))
                headers[HTTPField.Name("Link")!] = "</v2/\(name)/tags/list?n=\(n)&last=\(tags.last!)>; rel=\"next\""
            }
            let list = tags.map { "\"\($0)\"" }.joined(separator: ",")
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: #"{"name":"\#(name)","tags":[\#(list)]}"#)))
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
            if case .corruptMiddle = fault, !bytes.isEmpty { bytes[bytes.count / 2] ^= 0xFF }
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
            if case .corruptMiddle(let c, let ms) = fault { chunk = c; pause = ms }
            var length: Int? = body.count
            if case .chunked(let c, let ms) = fault { chunk = c; pause = ms; length = nil; headers[.contentLength] = nil }
            let (cut, size, wait) = (dropAfter, chunk, pause)
            return Response(status: status, headers: headers, body: .init(contentLength: length) { writer in
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

/// The order in which several fixtures were contacted ("label METHOD path" per request).
final class SequenceLog: Sendable {
    let entries = Mutex<[String]>([])
    func append(_ s: String) { entries.withLock { $0.append(s) } }
    var all: [String] { entries.withLock { $0 } }
    /// The labels of the entries whose text contains `part`, in order.
    func labels(containing part: String) -> [String] {
        all.filter { $0.contains(part) }.map { String($0.split(separator: " ")[0]) }
    }
}
