import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP endpoint on 127.0.0.1 with a fixed port whose behaviour can be switched while Cove keeps using it:
/// relay to a real server, refuse connections, accept and never answer, or drop everything like a black hole.
///
/// - `.forward(port)`: a transparent TCP relay to `127.0.0.1:port` (a `FaultUpstream`).
/// - `.refuse`: nothing listens on the port (connection refused); open connections are reset.
/// - `.hang`: connections are accepted and never answered; open connections stop relaying (silently).
/// - `.blackHole`: new connections never complete (SYNs are dropped because the listen queue is kept full, so
///   the client's connect times out); open connections stop relaying (silently), as when a route disappears.
///
/// Threads and blocking sockets, polled every 20 ms; `stop()` ends everything.
final class SwitchableEndpoint: Sendable {
    enum Mode: Sendable, Equatable {
        case forward(Int)
        case refuse
        case hang
        case blackHole
    }

    private struct State {
        var mode: Mode
        var listener: Int32 = -1
        /// Connections kept open without relaying (hang, black hole), closed at `stop()`.
        var held: [Int32] = []
        /// Our own connection that keeps the listen queue full in `.blackHole`.
        var filler: Int32 = -1
        /// Client sockets of relays in progress.
        var relaying: Set<Int32> = []
        var accepted = 0
        var stopped = false
    }

    let port: Int
    private let state: Mutex<State>
    var url: String { "http://127.0.0.1:\(port)" }

    /// Connections accepted so far (not counting the black hole's own filler).
    var accepted: Int { state.withLock { $0.accepted } }
    var mode: Mode { state.withLock { $0.mode } }

    init(_ mode: Mode) throws {
        let fd = try Self.listen(port: 0, backlog: 64)
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        port = Int(UInt16(bigEndian: addr.sin_port))
        state = Mutex(State(mode: .forward(0), listener: fd))
        let t = Thread { [self] in acceptLoop() }
        t.name = "switchable-endpoint"
        t.start()
        try set(mode)
    }

    deinit { stop() }

    /// Switches behaviour; takes effect for open connections within a poll interval.
    func set(_ mode: Mode) throws {
        try state.withLock { s in
            let old = s.mode
            s.mode = mode
            if old == .refuse, mode != .refuse {
                s.listener = try Self.listen(port: port, backlog: 64)
            }
            if old == .blackHole, mode != .blackHole {
                if s.filler >= 0 { close(s.filler); s.filler = -1 }
                if s.listener >= 0 { Glibc.listen(s.listener, 64) }
            }
            switch mode {
            case .refuse:
                if s.listener >= 0 { close(s.listener); s.listener = -1 }
                for fd in s.held { Self.reset(fd) }
                s.held = []
                // Relays die now, not at their next poll: their clients must see a dead connection at once.
                var l = linger(l_onoff: 1, l_linger: 0)
                for fd in s.relaying {
                    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
                    shutdown(fd, Int32(SHUT_RDWR))
                }
            case .blackHole:
                // A backlog of 0 holds one queued connection; with our filler in it, Linux drops further SYNs.
                Glibc.listen(s.listener, 0)
                s.filler = try Self.connect(port: port)
            case .forward:
                // Connections held silent so far are dead now (as after a reboot), not revived.
                for fd in s.held { Self.reset(fd) }
                s.held = []
            case .hang:
                break
            }
        }
    }

    func stop() {
        let fds: [Int32] = state.withLock { s in
            guard !s.stopped else { return [] }
            s.stopped = true
            var fds = s.held + [s.listener, s.filler]
            fds = fds.filter { $0 >= 0 }
            s.held = []
            s.listener = -1
            s.filler = -1
            return fds
        }
        for fd in fds { close(fd) }
    }

    // MARK: - Threads

    private func acceptLoop() {
        while true {
            let (listener, stopped) = state.withLock { ($0.listener, $0.stopped) }
            if stopped { return }
            guard listener >= 0 else { usleep(20_000); continue }
            var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 20) > 0 else { continue }
            // Accept under the lock so a switch to .blackHole cannot race with an accept of its filler.
            let accepted: (Int32, Mode)? = state.withLock { s in
                guard !s.stopped, s.listener == listener, s.mode != .blackHole else { return nil }
                let fd = accept(listener, nil, nil)
                guard fd >= 0 else { return nil }
                s.accepted += 1
                return (fd, s.mode)
            }
            guard let (client, mode) = accepted else { usleep(5_000); continue }
            Self.setBlocking(client)
            switch mode {
            case .forward(let target):
                let t = Thread { [self] in relay(client, to: target) }
                t.name = "switchable-relay"
                t.start()
            case .hang, .blackHole:
                let kept = state.withLock { s -> Bool in
                    guard !s.stopped else { return false }
                    s.held.append(client)
                    return true
                }
                if !kept { close(client) }
            case .refuse:
                Self.reset(client)
            }
        }
    }

    private func relay(_ client: Int32, to target: Int) {
        guard let server = try? Self.connect(port: target) else { Self.reset(client); return }
        state.withLock { _ = $0.relaying.insert(client) }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var fds = [pollfd(fd: client, events: Int16(POLLIN), revents: 0), pollfd(fd: server, events: Int16(POLLIN), revents: 0)]
        loop: while true {
            let (mode, stopped) = state.withLock { ($0.mode, $0.stopped) }
            if stopped { break }
            switch mode {
            case .forward: break
            case .refuse:
                state.withLock { _ = $0.relaying.remove(client) }
                Self.reset(client)
                close(server)
                return
            case .hang, .blackHole:
                // Stop relaying but keep both ends open: the client's requests go unanswered.
                let kept = state.withLock { s -> Bool in
                    s.relaying.remove(client)
                    guard !s.stopped else { return false }
                    s.held += [client, server]
                    return true
                }
                if kept { return }
                break loop
            }
            fds[0].revents = 0
            fds[1].revents = 0
            guard poll(&fds, 2, 20) >= 0 else { break }
            for (i, (from, to)) in [(client, server), (server, client)].enumerated() where fds[i].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                if n <= 0 { break loop }
                var off = 0
                while off < n {
                    let w = buffer.withUnsafeBytes { write(to, $0.baseAddress! + off, n - off) }
                    if w <= 0 { break loop }
                    off += w
                }
            }
        }
        state.withLock { _ = $0.relaying.remove(client) }
        close(client)
        close(server)
    }

    // MARK: - Sockets

    private static func listen(port: Int, backlog: Int32) throws -> Int32 {
        // A listener closed a moment ago lingers while the accept thread's poll() still holds it (≤ 20 ms).
        for _ in 0..<25 {
            if let fd = try? listenOnce(port: port, backlog: backlog) { return fd }
            usleep(10_000)
        }
        return try listenOnce(port: port, backlog: backlog)
    }

    private static func listenOnce(port: Int, backlog: Int32) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed: \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.loopback(port: port)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, Glibc.listen(fd, backlog) == 0 else { close(fd); throw TestFailure("bind/listen on port \(port) failed: \(errno)") }
        // Non-blocking, so an accept after poll never blocks (e.g. when the client already went away).
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        return fd
    }

    private static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed: \(errno)") }
        var addr = Self.loopback(port: port)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw TestFailure("connect to \(port) failed: \(errno)") }
        return fd
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }

    private static func setBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
    }

    /// Closes with RST (SO_LINGER 0), as a crashed server's kernel would.
    private static func reset(_ fd: Int32) {
        var l = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    /// A port that nothing listens on: connections to it are refused. The port stays bound (without listening)
    /// by a socket kept for the life of the test process, so no server started later can be given it; a port
    /// bound and closed again was sometimes handed to another test's listener, which then answered instead.
    static func closedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed: \(errno)") }
        var addr = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else { close(fd); throw TestFailure("bind failed: \(errno)") }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port)) // `fd` is deliberately never closed.
    }
}
