/// Why an upstream request did not produce a usable response.
public enum UpstreamError: Error, Sendable, CustomStringConvertible {
    /// The connection failed, timed out or dropped (libcurl error text and code).
    /// `bytesReceived` counts body bytes delivered to a sink before the failure (for resuming).
    case transport(String, code: Int)
    /// The upstream answered with a non-2xx status (body kept for its error message, at most 64 KiB).
    case status(ResponseHead, body: [UInt8])
    /// Authentication could not be completed (token endpoint failed, challenge malformed, realm refused).
    case auth(String)
    /// A `BodySink` refused the body (size limit, disk error, ...).
    case aborted(String)
    /// Too many redirects or a redirect to an unusable URL.
    case redirect(String)
    /// A connection was refused by the address rules (`AddressPolicy`): which host, its address, and why.
    case refusedAddress(String)
    /// The endpoint answered, but its content failed verification (wrong digest or size).
    case invalidContent(String)

    public var description: String {
        switch self {
        case .transport(let m, let code): "upstream connection failed: \(m) (curl \(code))"
        case .status(let head, let body):
            // One line, whatever the upstream sent: these end up in logs.
            "upstream answered \(head.status)" + (body.isEmpty ? "" : ": " + String(decoding: body.prefix(300), as: UTF8.self)
                .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " "))
        case .auth(let m): "upstream authentication failed: \(m)"
        case .aborted(let m): "transfer aborted: \(m)"
        case .redirect(let m): "upstream redirect refused: \(m)"
        case .refusedAddress(let m): "upstream address refused: \(m)"
        case .invalidContent(let m): "upstream content failed verification: \(m)"
        }
    }
}
