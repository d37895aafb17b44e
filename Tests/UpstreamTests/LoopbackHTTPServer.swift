import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 server on one loopback address (`127.0.0.1` or `::1`) that counts the connections it
/// accepts and the requests it reads, and answers every request `200 ok` on a kept-alive connection.
/// Threads and blocking sockets; `stop()` closes the listener.
final class LoopbackHTTPServer: Sendable {
    let port: Int
    private let listener: Int32
    private let counts = Mutex((connections: 0, requests: 0, stopped: false))

    var connections: Int { counts.withLock { $0.connections } }
    var requests: Int { counts.withLock { $0.requests } }

    init(ipv6: Bool = false) throws {
        let fd = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var bound: Int32
        if ipv6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_addr = in6addr_loopback
            bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = inet_addr("127.0.0.1")
            bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else { close(fd); throw POSIXError(.EADDRNOTAVAIL) }
        var storage = sockaddr_in6()
        var len = socklen_t(MemoryLayout<sockaddr_in6>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: storage.sin6_port)) // sin_port and sin6_port share the offset
        listener = fd
        let t = Thread { [self] in acceptLoop() }
        t.name = "loopback-http"
        t.start()
    }

    func stop() {
        counts.withLock { $0.stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
    }

    deinit { close(listener) }

    private func acceptLoop() {
        while true {
            let c = accept(listener, nil, nil)
            if c < 0 {
                if counts.withLock({ $0.stopped }) { return }
                continue
            }
            counts.withLock { $0.connections += 1 }
            let t = Thread { [self] in serve(c) }
            t.start()
        }
    }

    private func serve(_ c: Int32) {
        defer { close(c) }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(c, &buffer, buffer.count)
            if n <= 0 { return }
            pending += buffer[0..<n]
            while let end = pending.firstRange(of: [13, 10, 13, 10]) {
                pending.removeSubrange(0..<end.upperBound)
                counts.withLock { $0.requests += 1 }
                let response = Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok".utf8)
                _ = response.withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
            }
        }
    }
}
