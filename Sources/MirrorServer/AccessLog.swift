import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Metrics
import Mirror
import NIOCore
import Upstream

/// One request's access-log entry and its `cove_http_requests_total` count: method, path, status, bytes sent,
/// duration, cache outcome, upstream endpoint, the client's address and authenticated user. Written once a
/// streamed (blob GET) body has been sent or failed; for every other answer (one small buffer or none) when the
/// response is handed to the server.
///
/// One object per request (plus the `RequestTrace` the layers below fill in); the log line is one `info` call
/// with a fixed set of metadata keys. Paths are logged without the query; no header is ever logged, so
/// credentials and tokens (which travel only in headers) cannot reach the log.
final class AccessRecord: @unchecked Sendable {
    // Mutated only by the task writing the body, read after it; never shared concurrently.
    let method: HTTPRequest.Method
    let path: String
    /// The metrics route label (`route(_:)`).
    let route: String
    let started: ContinuousClock.Instant
    let trace: RequestTrace
    /// The peer of the connection (behind nginx: nginx).
    let client: SocketAddress?
    /// The authenticated user (htpasswd), set once admitted; nil for anonymous clients.
    var user: String?
    var bytesSent: Int64 = 0

    init(request: Request, trace: RequestTrace, client: SocketAddress?) {
        method = request.method
        path = request.uri.path
        route = Self.route(path)
        started = .now
        self.trace = trace
        self.client = client
    }

    /// Logs the line and counts the request. `aborted`: the body was cut short (client gone, fill failed).
    func finish(status: Int, logger: Logger, metrics: MirrorMetrics, aborted: Error?) {
        let elapsed = ContinuousClock.now - started
        let ms = Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15
        let outcome = trace.outcome
        // Content only: a 416's or a 503's JSON error body was not served from the cache.
        if outcome == .hit || outcome == .stale, status == 200 || status == 206 { metrics.servedFromCache.increment(by: bytesSent) }
        metrics.httpRequests(route: route, method: Self.methodLabel(method), status: status).increment()
        var metadata: Logger.Metadata = [
            "status": "\(status)", "bytes": "\(bytesSent)", "ms": "\(Self.rounded(ms))",
            "cache": "\(outcome?.rawValue ?? "-")", "upstream": "\(trace.endpoint ?? "-")",
            "client": "\(client?.ipAddress ?? "-")", "user": "\(user.map { String($0.prefix(64)).debugDescription } ?? "-")",
        ]
        if let aborted { metadata["aborted"] = "\(aborted)" }
        logger.info("\(method) \(path) \(status)", metadata: metadata)
    }

    /// Milliseconds with one decimal, without Foundation's formatter.
    static func rounded(_ ms: Double) -> String {
        let tenths = Int((ms * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// The route label: `base`, `manifest`, `blob`, `tags`, `referrers`, or `other` (few values on purpose).
    static func route(_ path: String) -> String {
        if path == "/v2/" || path == "/v2" { return "base" }
        guard path.hasPrefix("/v2/") else { return "other" }
        // Byte-wise search (ASCII markers): Foundation's `contains` cost a measurable share of a manifest hit.
        let p = path[...]
        func has(_ marker: StaticString) -> Bool { RegistryRoute.lastRange(of: marker, in: p) != nil }
        if has("/blobs/uploads") { return "other" }
        if has("/manifests/") { return "manifest" }
        if has("/blobs/") { return "blob" }
        if path.hasSuffix("/tags/list") { return "tags" }
        if has("/referrers/") { return "referrers" }
        return "other"
    }

    /// The standard methods by name, anything else `OTHER` (a client must not create label values at will).
    static func methodLabel(_ method: HTTPRequest.Method) -> String {
        switch method {
        case .get, .head, .put, .post, .patch, .delete, .options: method.rawValue
        default: "OTHER"
        }
    }
}

/// Forwards body writes and counts the bytes into an `AccessRecord`.
struct CountingBodyWriter: ResponseBodyWriter {
    var inner: any ResponseBodyWriter
    let record: AccessRecord

    mutating func write(_ buffer: ByteBuffer) async throws {
        try await inner.write(buffer)
        record.bytesSent += Int64(buffer.readableBytes)
    }

    mutating func write(contentsOf buffers: some Sequence<ByteBuffer>) async throws {
        for buffer in buffers { try await write(buffer) }
    }

    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {
        try await inner.finish(trailingHeaders)
    }
}

/// A body writer that also learns of bytes sent around it: `BlobSendfile` writes file regions below
/// Hummingbird's body writer, so the access record's byte count would otherwise miss them.
protocol BodyBytesCounting {
    /// Adds `bytes` sent for this body by other means than `write`.
    func countSent(_ bytes: Int64)
}

extension CountingBodyWriter: BodyBytesCounting {
    func countSent(_ bytes: Int64) { record.bytesSent += bytes }
}

extension Response {
    /// Logs the access line for a response whose body is one buffer or none (everything but a blob GET): now,
    /// with the body's size, rather than after the write. Keeping the body a plain buffer lets Hummingbird write
    /// head, body and end as one batch (one syscall); a wrapped body costs three writes and flushes.
    func logged(_ record: AccessRecord, logger: Logger, metrics: MirrorMetrics) {
        record.bytesSent = Int64(body.contentLength ?? 0)
        record.finish(status: Int(status.code), logger: logger, metrics: metrics, aborted: nil)
    }

    /// Wraps the body so the access record learns the bytes sent and logs once the body is done.
    mutating func logging(_ record: AccessRecord, logger: Logger, metrics: MirrorMetrics) {
        let original = body
        let status = Int(self.status.code)
        body = ResponseBody(contentLength: original.contentLength) { writer in
            do {
                try await original.write(CountingBodyWriter(inner: writer, record: record))
            } catch {
                record.finish(status: status, logger: logger, metrics: metrics, aborted: error)
                throw error
            }
            record.finish(status: status, logger: logger, metrics: metrics, aborted: nil)
        }
    }
}
