import CCurl
import Foundation
import Synchronization

/// Timeouts and limits of one transfer.
public struct TransferLimits: Sendable {
    /// Seconds allowed to establish the TCP (and TLS) connection.
    public var connectTimeout: Double
    /// A transfer slower than `lowSpeedLimit` bytes/s for `lowSpeedTime` seconds is aborted (a stall).
    public var lowSpeedLimit: Int
    public var lowSpeedTime: Double
    /// Whole-transfer timeout in seconds; 0 means none (blob bodies rely on the low-speed rule instead).
    public var totalTimeout: Double
    /// The operation's deadline: caps both timeouts above; with `totalTimeout` 0 it bounds the wait for the
    /// response head only (see `Deadline`).
    public var deadline: Deadline = .none

    public init(connectTimeout: Double = 10, lowSpeedLimit: Int = 1024, lowSpeedTime: Double = 30, totalTimeout: Double = 0) {
        self.connectTimeout = connectTimeout
        self.lowSpeedLimit = lowSpeedLimit
        self.lowSpeedTime = lowSpeedTime
        self.totalTimeout = totalTimeout
    }
}

/// One HTTP exchange on libcurl, run to completion on its own thread (libcurl's easy interface blocks).
///
/// No redirects are followed and no credentials added here: `UpstreamClient` decides both, so it can keep
/// `Authorization` off other hosts. Bodies of 2xx responses go to the `BodySink` from libcurl's write callback
/// on the transfer thread; other bodies are buffered up to 64 KiB for the error message.
final class CurlTransfer: @unchecked Sendable {
    /// Largest non-sink body buffered, in bytes.
    static let bufferLimit = 64 * 1024

    let method: String
    let url: String
    let headers: [String]
    let sink: BodySink?
    /// Buffer cap for a 2xx body without a sink (manifests, tokens, tag lists), in bytes.
    let successBufferLimit: Int
    let limits: TransferLimits

    // Mutated only on the transfer thread while it runs, read after it ends.
    private var statusLine = 0
    private var pendingHeaders: [(name: String, value: String)] = []
    private(set) var head: ResponseHead?
    private(set) var body: [UInt8] = []
    private var toSink = false
    private(set) var abortReason: String?
    /// When the response head must have arrived (blob GETs under a deadline), checked by the progress callback.
    var headBy: ContinuousClock.Instant?
    var headTimedOut = false
    /// The address rules for this transfer (set before `run()`); nil connects anywhere.
    var addressGate: AddressGate?

    init(method: String, url: String, headers: [String], sink: BodySink?, successBufferLimit: Int, limits: TransferLimits) {
        self.method = method
        self.url = url
        self.headers = headers
        self.sink = sink
        self.successBufferLimit = successBufferLimit
        self.limits = limits
    }

    /// Runs the exchange on a new thread and returns its head and buffered body.
    /// - Throws: `UpstreamError.transport` (connect/timeout/drop), `.aborted` (sink refused or body too big).
    func run() async throws(UpstreamError) -> (ResponseHead, [UInt8]) {
        let result: Result<(ResponseHead, [UInt8]), UpstreamError> = await withCheckedContinuation { c in
            let t = Thread { c.resume(returning: self.perform()) }
            t.name = "cove-curl"
            t.start()
        }
        return try result.get()
    }

    private func perform() -> Result<(ResponseHead, [UInt8]), UpstreamError> {
        _ = CurlShare.shared
        guard let h = curl_easy_init() else { return .failure(.transport("curl_easy_init failed", code: -1)) }
        defer { curl_easy_cleanup(h) }
        var list: UnsafeMutablePointer<curl_slist>?
        for header in headers { list = curl_slist_append(list, header) }
        defer { curl_slist_free_all(list) }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }
        let me = Unmanaged.passUnretained(self).toOpaque()

        cove_curl_setopt_ptr(h, CURLOPT_URL, url)
        cove_curl_setopt_ptr(h, CURLOPT_SHARE, UnsafeRawPointer(CurlShare.shared.handle))
        cove_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        cove_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, 0)
        cove_curl_setopt_long(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1)
        cove_curl_setopt_ptr(h, CURLOPT_PROTOCOLS_STR, "http,https")
        cove_curl_setopt_long(h, CURLOPT_TCP_KEEPALIVE, 1)
        cove_curl_setopt_long(h, CURLOPT_BUFFERSIZE, 512 * 1024)
        cove_curl_setopt_ptr(h, CURLOPT_USERAGENT, "cove/0.1 (pull-through cache)")
        cove_curl_setopt_ptr(h, CURLOPT_ERRORBUFFER, errorBuffer)
        if limits.deadline.hasPassed() { return .failure(transportFailure("operation deadline passed before the request", code: 28)) }
        let (limits, headTimeout) = limits.effective()
        cove_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(limits.connectTimeout))
        cove_curl_setopt_long(h, CURLOPT_LOW_SPEED_LIMIT, limits.lowSpeedLimit)
        cove_curl_setopt_long(h, CURLOPT_LOW_SPEED_TIME, max(1, Self.milliseconds(limits.lowSpeedTime) / 1000))
        if limits.totalTimeout > 0 { cove_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Self.milliseconds(limits.totalTimeout)) }
        if let headTimeout { watchHead(h, seconds: headTimeout, me: me) }
        if method == "HEAD" {
            cove_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        } else {
            cove_curl_setopt_long(h, CURLOPT_HTTPGET, 1)
        }
        if let addressGate {
            guard addressGate.allowsStart() else { return .failure(addressGate.error!) }
            Self.install(addressGate, on: h)
        }
        cove_curl_setopt_ptr(h, CURLOPT_HTTPHEADER, list)
        cove_curl_setopt_ptr(h, CURLOPT_HEADERDATA, me)
        cove_curl_setopt_header(h) { ptr, size, n, user in
            let t = Unmanaged<CurlTransfer>.fromOpaque(user!).takeUnretainedValue()
            return t.onHeader(UnsafeRawBufferPointer(start: ptr, count: size * n)) ? size * n : 0
        }
        cove_curl_setopt_ptr(h, CURLOPT_WRITEDATA, me)
        cove_curl_setopt_write(h) { ptr, size, n, user in
            let t = Unmanaged<CurlTransfer>.fromOpaque(user!).takeUnretainedValue()
            return t.onBody(UnsafeRawBufferPointer(start: ptr, count: size * n)) ? size * n : 0
        }

        let code = curl_easy_perform(h)
        if code != CURLE_OK, let refused = addressGate?.error { return .failure(refused) }
        if headTimedOut { return .failure(transportFailure("no response within \(Self.seconds(headTimeout ?? 0)) s", code: 28)) }
        if let abortReason { return .failure(.aborted(abortReason)) }
        guard code == CURLE_OK else {
            var message = String(cString: errorBuffer)
            if message.isEmpty { message = String(cString: curl_easy_strerror(code)) }
            return .failure(transportFailure(message, code: Int(code.rawValue)))
        }
        guard let head else { return .failure(transportFailure("no HTTP response", code: -1)) }
        return .success((head, body))
    }

    /// Seconds as libcurl milliseconds: at least 1 (0 would mean "no limit"), at most a day.
    static func milliseconds(_ seconds: Double) -> Int {
        guard seconds.isFinite else { return 86_400_000 }
        return Int(min(86_400_000, max(1, (seconds * 1000).rounded(.up))))
    }

    private func onHeader(_ line: UnsafeRawBufferPointer) -> Bool {
        // Strip CR/LF as bytes: Swift treats "\r\n" as one Character, so hasSuffix("\n") would miss it.
        var bytes = line[...]
        while let last = bytes.last, last == 0x0A || last == 0x0D { bytes = bytes.dropLast() }
        let s = String(decoding: bytes, as: UTF8.self)
        if s.hasPrefix("HTTP/") {
            // A new response (after 1xx): start over.
            let parts = s.split(separator: " ", maxSplits: 2)
            statusLine = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
            pendingHeaders = []
            return true
        }
        if s.isEmpty {
            guard statusLine >= 200 else { return true } // end of a 1xx block
            let h = ResponseHead(status: statusLine, headers: pendingHeaders)
            head = h
            if h.isSuccess, method != "HEAD", let sink {
                toSink = true
                if !sink.begin(h) { abortReason = "refused by receiver"; return false }
            }
            return true
        }
        if let colon = s.firstIndex(of: ":") {
            let name = String(s[..<colon]).trimmingCharacters(in: .whitespaces)
            let value = String(s[s.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            pendingHeaders.append((name, value))
        }
        return true
    }

    private func onBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if toSink {
            if sink!.write(bytes) { return true }
            abortReason = abortReason ?? "refused by receiver"
            return false
        }
        let limit = (head?.isSuccess ?? false) ? successBufferLimit : Self.bufferLimit
        if body.count + bytes.count > limit {
            if head?.isSuccess ?? false {
                abortReason = "response body larger than \(limit) bytes"
                return false
            }
            body.append(contentsOf: bytes.prefix(max(0, limit - body.count)))
            return true
        }
        body.append(contentsOf: bytes)
        return true
    }
}
