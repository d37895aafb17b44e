import Foundation
import HTTPTypes
import Hummingbird
import Mirror
import NIOCore
import Prometheus

/// The operator endpoints beside the registry API: `/healthz`, `/readyz`, `/metrics` and the status page `/`.
/// Only `GET` and `HEAD` (HEAD answers the GET's headers without the body); none of them is access-logged
/// except `/` and `/metrics`, which are ordinary requests.
extension RegistryResponder {
    /// Paths answered here rather than by the registry routes.
    enum OperatorPath {
        case health, ready, metrics, status

        init?(_ path: String) {
            switch path {
            case "/healthz": self = .health
            case "/readyz": self = .ready
            case "/metrics": self = .metrics
            case "/": self = .status
            default: return nil
            }
        }

        /// Probes run every few seconds: logging them would drown the access log.
        var isLogged: Bool { self == .metrics || self == .status }
    }

    /// The answer for an operator path (GET or HEAD).
    func operatorResponse(_ path: OperatorPath, head: Bool) async -> Response {
        switch path {
        case .health:
            return Self.plain(status: .ok, "ok\n", contentType: "text/plain; charset=utf-8", head: head)
        case .ready:
            let report = readiness.check(mirror)
            return Self.plain(status: report.ready ? .ok : .serviceUnavailable, report.json, contentType: "application/json", head: head)
        case .metrics:
            guard let prometheus else {
                return Self.errorResponse(.init(.unsupported, "metrics are not enabled on this server", status: 404), head: head)
            }
            await mirror.updateGauges()
            return Self.plain(status: .ok, prometheus.emitToBuffer(), contentType: "text/plain; version=0.0.4; charset=utf-8", head: head)
        case .status:
            let html = StatusPage.render(await mirror.status(), startedAt: startedAt)
            var response = Self.plain(status: .ok, Array(html.utf8), contentType: "text/html; charset=utf-8", head: head)
            response.headers[.cacheControl] = "no-store"
            return response
        }
    }

    static func plain(status: HTTPResponse.Status, _ text: String, contentType: String, head: Bool) -> Response {
        plain(status: status, Array(text.utf8), contentType: contentType, head: head)
    }

    static func plain(status: HTTPResponse.Status, _ body: [UInt8], contentType: String, head: Bool) -> Response {
        Response(status: status, headers: [.contentType: contentType, .contentLength: String(body.count)],
                 body: head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
