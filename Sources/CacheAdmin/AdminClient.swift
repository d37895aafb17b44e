import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 client for the admin socket: one `POST` per connection (`Connection: close`), response
/// read to the end. Blocking I/O on a thread of its own, so callers' async executors are never blocked.
enum AdminClient {
    /// Why a request did not get an HTTP answer.
    enum Failure: Error {
        /// Nothing listens (ENOENT, ECONNREFUSED): the server is starting, stopping, or not a server at all.
        case unreachable(String)
        /// Something answered, but not HTTP we understand, or the connection broke.
        case protocolError(String)
    }

    /// Sends `body` to `POST /v1/<command>` on the socket at `socketPath`.
    /// - Returns: the status code and the response body.
    static func post(socketPath: String, command: String, body: Data) async throws(Failure) -> (status: Int, body: Data) {
        let result: Result<(Int, Data), Failure> = await withCheckedContinuation { c in
            Thread { c.resume(returning: exchange(socketPath: socketPath, command: command, body: body)) }.start()
        }
        return try result.get()
    }

    private static func exchange(socketPath: String, command: String, body: Data) -> Result<(Int, Data), Failure> {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.unreachable("socket: \(String(cString: strerror(errno)))")) }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return .failure(.unreachable("socket path too long")) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return .failure(.unreachable(String(cString: strerror(errno)))) }
        let head = "POST /v1/\(command) HTTP/1.1\r\nHost: cove-admin\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var request = Data(head.utf8)
        request.append(body)
        var sent = 0
        while sent < request.count {
            let n = request.withUnsafeBytes { write(fd, $0.baseAddress! + sent, request.count - sent) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.protocolError("write: \(String(cString: strerror(errno)))"))
            }
            sent += n
        }
        var response = Data()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.protocolError("read: \(String(cString: strerror(errno)))"))
            }
            if n == 0 { break }
            response.append(contentsOf: buffer[0..<n])
        }
        return parse(response)
    }

    /// Parses a complete HTTP/1.1 response (identity or chunked body).
    static func parse(_ response: Data) -> Result<(Int, Data), Failure> {
        guard let split = response.range(of: Data("\r\n\r\n".utf8)) else { return .failure(.protocolError("incomplete response")) }
        let head = String(decoding: response[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n")
        guard let statusLine = head.first, statusLine.hasPrefix("HTTP/1."),
              let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            return .failure(.protocolError("not an HTTP response"))
        }
        var fields: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(response[split.upperBound...])
        if fields["transfer-encoding"]?.lowercased().contains("chunked") == true {
            var out = Data()
            var rest = body[...]
            while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
                let sizeText = String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { return .failure(.protocolError("bad chunk")) }
                if size == 0 { break }
                let start = lineEnd.upperBound
                guard rest.distance(from: start, to: rest.endIndex) >= size + 2 else { return .failure(.protocolError("truncated chunk")) }
                let end = rest.index(start, offsetBy: size)
                out.append(rest[start..<end])
                rest = rest[rest.index(end, offsetBy: 2)...]
            }
            body = out
        } else if let length = fields["content-length"].flatMap({ Int($0) }) {
            guard body.count >= length else { return .failure(.protocolError("truncated body")) }
            body = body.prefix(length)
        }
        return .success((status, body))
    }
}
