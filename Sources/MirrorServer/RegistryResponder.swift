import Access
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mirror
import NIOCore
import OCI
import Prometheus
import Upstream

/// The registry API front: maps requests to `Mirror` calls and `DistributionError`s to the JSON envelope.
///
/// Pull side only (OCI distribution spec "Pull" plus tag listing); every push or delete method answers 405
/// `UNSUPPORTED`, because a mirror is read-only.
public struct RegistryResponder: HTTPResponder {
    public typealias Context = CoveRequestContext
    let mirror: Mirror
    /// Access lines (info) and request errors.
    let logger: Logger
    /// Client authentication and repository policies, checked before any `Mirror` call.
    let access: ClientAccess
    /// Rendered at `/metrics`; nil: `/metrics` answers 404.
    let prometheus: PrometheusCollectorRegistry?
    /// `/readyz`'s checks and the shutdown flag.
    let readiness: Readiness
    /// For the status page's uptime.
    let startedAt = Date()

    /// - Parameters:
    ///   - access: who may pull what (`ClientAccess.open`: everyone, everything).
    ///   - prometheus: the registry the metrics factory of `mirror` records into, rendered at `/metrics`.
    ///   - readiness: flips `/readyz` to 503 when shutdown begins (`Readiness.beginShutdown()`).
    public init(mirror: Mirror, logger: Logger, access: ClientAccess = .open, prometheus: PrometheusCollectorRegistry? = nil,
                readiness: Readiness = Readiness()) {
        self.mirror = mirror
        self.logger = logger
        self.access = access
        self.prometheus = prometheus
        self.readiness = readiness
    }

    static let apiVersion = HTTPField.Name("Docker-Distribution-API-Version")!
    static let contentDigest = HTTPField.Name("Docker-Content-Digest")!
    static let warning = HTTPField.Name("Warning")!
    static let coveCache = HTTPField.Name("X-Cove-Cache")!
    static let link = HTTPField.Name("Link")!
    static let filtersApplied = HTTPField.Name("OCI-Filters-Applied")!

    /// Marks a response served from the cache because no upstream endpoint could answer (RFC 9111 §5.5.1
    /// `Warning: 110`, kept because clients and proxies still log it, and `X-Cove-Cache: stale`).
    static func markStale(_ headers: inout HTTPFields) {
        headers[warning] = "110 cove \"Response is Stale\""
        headers[coveCache] = "stale"
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let operatorPath = OperatorPath(request.uri.path)
        if let operatorPath, request.method == .get || request.method == .head, !operatorPath.isLogged {
            return await operatorResponse(operatorPath, head: request.method == .head)
        }
        let trace = RequestTrace()
        let record = AccessRecord(request: request, trace: trace, client: context.channel.remoteAddress)
        var response: Response
        do {
            if let operatorPath, request.method == .get || request.method == .head {
                // The status page and /metrics need a user whenever `auth` is configured.
                record.user = try await access.admit(path: request.uri.path, authorization: request.headers[.authorization]).client.name
                response = await operatorResponse(operatorPath, head: request.method == .head)
            } else {
                response = try await RequestTrace.$current.withValue(trace) { try await admittedRoute(request, channel: context.channel, record: record) }
            }
        } catch let error as DistributionError {
            response = Self.errorResponse(error, head: request.method == .head)
        } catch {
            response = Self.errorResponse(DistributionError(.unknown, "internal error"), head: request.method == .head)
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
        }
        response.headers[Self.apiVersion] = "registry/2.0"
        // Only a blob GET streams its body (`blob(...)`); every other answer is built as one buffer or none.
        if record.route == "blob", request.method == .get {
            response.logging(record, logger: logger, metrics: mirror.metrics)
        } else {
            response.logged(record, logger: logger, metrics: mirror.metrics)
        }
        return response
    }

    func route(_ request: Request, channel: any Channel) async throws -> Response {
        // Decode percent escapes first, as distribution's router does (`sha256%3A…` is a digest); the decoded
        // name is still validated, so `%2e%2e` becomes `..` and is refused.
        let raw = request.uri.path
        guard let path = raw.utf8.contains(UInt8(ascii: "%")) ? raw.removingPercentEncoding : raw else {
            throw DistributionError(.nameInvalid, "malformed percent-encoding in the request path")
        }
        let router = mirror.router
        guard let route = try RegistryRoute(path: path, isRegistry: { router.isRegistryPrefix($0) }) else {
            throw DistributionError(.unsupported, "no such endpoint: \(path.prefix(200))", status: 404)
        }
        let method = request.method
        let readOnly = method == .get || method == .head
        switch route {
        case .base:
            guard readOnly else { throw Self.unsupported(method) }
            return Self.json([UInt8]("{}".utf8), head: method == .head)
        case .catalog:
            throw DistributionError(.unsupported, "catalog listing is not offered by this mirror", status: readOnly ? 404 : 405)
        case .upload:
            throw Self.unsupported(method)
        case .referrers(let target, let digest):
            guard readOnly else { throw Self.unsupported(method) }
            let artifactType = request.uri.queryParameters["artifactType"].map(String.init)
            let list = try await mirror.referrers(try registry(for: target, request), target.name, digest,
                                                  query: Self.query(request, dropping: "ns"), artifactType: artifactType)
            var response = Self.json(list.body, head: method == .head, contentType: MediaType.ociIndex)
            if let link = list.link { response.headers[Self.link] = Self.clientLink(link, target: target, request: request) }
            if list.filtersApplied { response.headers[Self.filtersApplied] = "artifactType" }
            if list.stale { Self.markStale(&response.headers) }
            return response
        case .tags(let target):
            guard readOnly else { throw Self.unsupported(method) }
            if let n = request.uri.queryParameters["n"], Int(n).map({ $0 < 0 }) ?? true {
                throw DistributionError(.paginationNumberInvalid, "n must be a non-negative integer, not \(RepositoryName.quoted(String(n)))")
            }
            let registry = try registry(for: target, request)
            let list = try await mirror.tags(registry, target.name, query: Self.query(request, dropping: "ns"))
            var response = Self.json(list.body, head: method == .head)
            if let link = list.link { response.headers[Self.link] = Self.clientLink(link, target: target, request: request) }
            if list.stale { Self.markStale(&response.headers) }
            return response
        case .manifest(let target, let reference):
            guard readOnly else { throw Self.unsupported(method) }
            let manifest = try await mirror.manifest(try registry(for: target, request), target.name, reference)
            var headers: HTTPFields = [
                .contentType: manifest.mediaType,
                .contentLength: String(manifest.body.count),
                Self.contentDigest: manifest.digest.description,
                .eTag: "\"\(manifest.digest)\"",
            ]
            if manifest.stale { Self.markStale(&headers) }
            let body = method == .head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: manifest.body))
            return Response(status: .ok, headers: headers, body: body)
        case .blob(let target, let digest):
            guard readOnly else { throw Self.unsupported(method) }
            return try await blob(try registry(for: target, request), target.name, digest, request: request, channel: channel)
        }
    }

    /// Routing (docs/ARCHITECTURE.md): a `/v2/<registry-host>/...` path prefix, else containerd's `?ns=<registry>`,
    /// else the default registry.
    private func registry(for target: RepositoryTarget, _ request: Request) throws(DistributionError) -> RegistryClient {
        let ns = request.uri.queryParameters["ns"].map(String.init)
        let registry = try mirror.router.registry(pathPrefix: target.registry, namespace: ns)
        try access.checkRepository(registry: registry.name, repository: registry.upstreamName(for: target.name).value)
        return registry
    }

    /// The next-page `Link` as the client must send it: with the registry path prefix or `ns` it used.
    static func clientLink(_ link: String, target: RepositoryTarget, request: Request) -> String {
        var link = link
        if let registry = target.registry {
            link = link.replacingOccurrences(of: "</v2/\(target.name.value)/", with: "</v2/\(registry)/\(target.name.value)/")
        } else if let ns = request.uri.queryParameters["ns"], let close = link.firstIndex(of: ">") {
            let encoded = String(ns).addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: ".-_:"))) ?? String(ns)
            link.insert(contentsOf: (link[..<close].contains("?") ? "&" : "?") + "ns=" + encoded, at: close)
        }
        return link
    }

    /// The request's query string without `name` (containerd's `ns` is for Cove, not for the upstream).
    static func query(_ request: Request, dropping name: String) -> String {
        PageLink.query(request.uri.query ?? "", dropping: name)
    }

    private func blob(_ registry: RegistryClient, _ name: RepositoryName, _ digest: Digest, request: Request, channel: any Channel) async throws -> Response {
        var headers: HTTPFields = [
            Self.contentDigest: digest.description,
            .acceptRanges: "bytes",
            .eTag: "\"\(digest)\"",
            .cacheControl: "max-age=31536000",
        ]
        let rangeHeader = request.headers[.range]
        if request.method == .head {
            // HEAD is GET without the body: same status, same headers, same range rules.
            let (size, mediaType) = try await mirror.blobHead(registry, name, digest)
            headers[.contentType] = mediaType
            switch ByteRange.parse(rangeHeader, size: size) {
            case .range(let r):
                headers[.contentRange] = "bytes \(r.start)-\(r.end)/\(size)"
                headers[.contentLength] = String(r.count)
                return Response(status: .partialContent, headers: headers, body: ResponseBody())
            case .unsatisfiable:
                return Self.unsatisfiable(rangeHeader, size: size, head: true)
            case .whole:
                headers[.contentLength] = String(size)
                return Response(status: .ok, headers: headers, body: ResponseBody())
            }
        }
        let blob = try await mirror.blob(registry, name, digest)
        headers[.contentType] = blob.mediaType
        var status = HTTPResponse.Status.ok
        var range = ByteRange(start: 0, end: blob.size - 1)
        switch ByteRange.parse(rangeHeader, size: blob.size) {
        case .whole: break
        case .range(let r):
            range = r
            status = .partialContent
            headers[.contentRange] = "bytes \(r.start)-\(r.end)/\(blob.size)"
        case .unsatisfiable:
            return Self.unsatisfiable(rangeHeader, size: blob.size, head: false)
        }
        headers[.contentLength] = String(range.count)
        let body = blob.body
        let logger = logger
        let metrics = mirror.metrics
        let span = range
        // Held until the body is written (or the client goes away): eviction leaves the blob alone meanwhile.
        let lease = blob.lease
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: Int(range.count)) { writer in
            defer { withExtendedLifetime(lease) {} }
            guard span.count > 0 else { return try await writer.finish(nil) }
            do {
                if case .fill = body {
                    // A reader of a fill in flight may wait long (a stalled upstream): stop when the client leaves.
                    try await ClientGoneWatcher.watching(channel) { gone in
                        try await BlobStreaming.writeWithSendfile(body, range: span, to: &writer, channel: channel, metrics: metrics, gone: gone)
                    }
                } else {
                    // A committed file: sendfile(2) where the connection allows it, else pread.
                    try await BlobStreaming.writeWithSendfile(body, range: span, to: &writer, channel: channel, metrics: metrics)
                }
            } catch {
                logger.warning("blob response aborted", metadata: ["digest": "\(digest)", "error": "\(error)"])
                throw error
            }
            try await writer.finish(nil)
        })
    }

    /// 416 with `Content-Range: bytes */<size>` (RFC 9110 §15.5.17) and a `RANGE_INVALID` envelope.
    static func unsatisfiable(_ range: String?, size: Int64, head: Bool) -> Response {
        let message = "range \(RepositoryName.quoted(range ?? "")) not satisfiable for \(size) bytes"
        var response = errorResponse(DistributionError(.rangeInvalid, message), head: head)
        response.headers[.contentRange] = "bytes */\(size)"
        return response
    }

    /// 405 for a method a read-only mirror does not take, with `Allow` (RFC 9110 §15.5.6 requires it).
    static func unsupported(_ method: HTTPRequest.Method) -> DistributionError {
        DistributionError(.unsupported, "\(method) is not supported: this registry is a read-only pull-through mirror",
                          headers: [("Allow", "GET, HEAD")])
    }

    static func json(_ body: [UInt8], head: Bool, contentType: String = "application/json") -> Response {
        Response(status: .ok, headers: [.contentType: contentType, .contentLength: String(body.count)],
                 body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The registry JSON error envelope with the error's status and extra headers.
    static func errorResponse(_ error: DistributionError, head: Bool) -> Response {
        let body = error.envelope
        var headers: HTTPFields = [.contentType: "application/json", .contentLength: String(body.count)]
        for (name, value) in error.headers {
            if let n = HTTPField.Name(name) { headers[n] = value }
        }
        return Response(status: .init(code: error.status), headers: headers,
                        body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
