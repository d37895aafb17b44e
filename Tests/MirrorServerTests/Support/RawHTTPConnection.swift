import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP/1.1 connection to a loopback port driven by hand, for what curl does not show: several responses on one
/// connection (keep-alive, pipelining) framed by their `Content-Length`, and a client that hangs up mid-body.
///
/// Blocking socket with send and receive timeouts (every wait is bounded); use it from `onThread`, never from
/// Swift's cooperative pool, which the server's responders need. Not thread-safe: one thread at a time.
final class RawHTTPConnection: @unchecked Sendable {
    struct Response: Sendable {
        var status: Int
        /// Lower-cased names.
        var headers: [String: String]
        var body: [UInt8]
    }

    private let fd: Int32
    private var pending: [UInt8] = []
    private var closed = false

    /// - Parameter timeout: seconds any single send or receive may block.
    init(port: Int, timeout: Int = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed: \(errno)") }
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else { Glibc.close(fd); throw TestFailure("connect to \(port) failed: \(errno)") }
    }

    deinit { if !closed { Glibc.close(fd) } }

    /// A GET (or `method`) request for `path`, with extra header lines.
    static func request(_ path: String, method: String = "GET", headers: [String] = []) -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
    }

    func send(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestFailure("send failed: \(errno)") }
            bytes = bytes.dropFirst(n)
        }
    }

    /// Reads one response; its body is `Content-Length` bytes, none for a response to HEAD.
    func readResponse(toHead: Bool = false) throws -> Response {
        var end: Int?
        while end == nil {
            end = Self.headEnd(pending)
            if end == nil { try fill() }
        }
        let headText = String(decoding: pending[..<end!], as: UTF8.self)
        pending.removeFirst(end! + 4)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw TestFailure("bad status line in \(headText)") }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = toHead ? 0 : Int(headers["content-length"] ?? "0") ?? 0
        while pending.count < length { try fill() }
        let body = Array(pending[..<length])
        pending.removeFirst(length)
        return Response(status: status, headers: headers, body: body)
    }

    /// Reads until at least `count` bytes (head included) have arrived, and keeps them.
    func receive(atLeast count: Int) throws {
        while pending.count < count { try fill() }
    }

    /// Hangs up with a reset (SO_LINGER 0), as a client that crashed or was killed does.
    func reset() {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        Glibc.close(fd)
        closed = true
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 256 << 10)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw TestFailure(n == 0 ? "connection closed by the server" : "recv failed: \(errno)") }
        pending.append(contentsOf: chunk[..<n])
    }

    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }
}

/// Runs blocking work on a thread of its own, off Swift's cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
