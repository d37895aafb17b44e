/// Status and headers of one upstream HTTP response.
public struct ResponseHead: Sendable {
    /// HTTP status code, e.g. 200.
    public var status: Int
    /// Header fields in arrival order, names as sent.
    public var headers: [(name: String, value: String)]

    public init(status: Int, headers: [(name: String, value: String)]) {
        self.status = status
        self.headers = headers
    }

    /// The first value of header `name` (case-insensitive), trimmed.
    public subscript(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name.lowercased() == lower }?.value
    }

    /// Every value of header `name` (case-insensitive).
    public func values(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.name.lowercased() == lower }.map(\.value)
    }

    /// `Content-Length` in bytes, if present and numeric.
    public var contentLength: Int64? { self["Content-Length"].flatMap { Int64($0) } }

    /// True for 2xx.
    public var isSuccess: Bool { (200..<300).contains(status) }
}

/// A whole buffered upstream response (small bodies only: manifests, tokens, tag lists, error documents).
public struct UpstreamResponse: Sendable {
    public var head: ResponseHead
    /// The body bytes; empty for HEAD or when streamed into a `BodySink`.
    public var body: [UInt8]
    /// The URL that produced this response after redirects.
    public var url: String
}

/// Receives a 2xx response body as it arrives, on the transfer thread, with no hop through async queues.
///
/// Return false from either method to abort the transfer (it then fails with `UpstreamError.aborted`).
public protocol BodySink: AnyObject, Sendable {
    /// Called once with the head of a 2xx response before any body byte.
    func begin(_ head: ResponseHead) -> Bool
    /// Called with each chunk of body bytes, in order.
    func write(_ bytes: UnsafeRawBufferPointer) -> Bool
    /// Called before each endpoint is tried, with its `host:port` (for logs and status).
    func attempting(endpoint: String)
}

extension BodySink {
    public func attempting(endpoint: String) {}
}
