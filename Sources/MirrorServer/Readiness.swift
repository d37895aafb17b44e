import Foundation
import Mirror
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `/readyz`: whether this Cove should get traffic. Ready when the index answers a trivial query, the storage
/// takes a new file in `tmp/` (created and removed), and shutdown has not begun. A load balancer stops sending
/// requests on the first 503; `/healthz` stays 200 as long as the process answers at all.
public final class Readiness: Sendable {
    private let stopping = Atomic<Bool>(false)
    private let probes = Atomic<Int>(0)

    public init() {}

    /// Marks the process as shutting down: from now on `/readyz` answers 503.
    public func beginShutdown() { stopping.store(true, ordering: .relaxed) }

    /// True once `beginShutdown()` was called.
    public var isShuttingDown: Bool { stopping.load(ordering: .relaxed) }

    /// One check's result: nil when it passed, else why it failed.
    public struct Report: Sendable {
        public var index: String?
        public var storage: String?
        public var shutdown: String?
        public var ready: Bool { index == nil && storage == nil && shutdown == nil }

        /// `{"checks":{"index":"ok"|reason,"shutdown":…,"storage":…},"ready":true|false}`.
        public var json: [UInt8] {
            struct Body: Encodable {
                var ready: Bool
                var checks: [String: String]
            }
            let body = Body(ready: ready, checks: ["index": index ?? "ok", "storage": storage ?? "ok", "shutdown": shutdown ?? "ok"])
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return Array((try? encoder.encode(body)) ?? Data()) + [10]
        }
    }

    /// Runs the checks (a SQLite read and a file create+unlink; cheap enough for a probe every second).
    public func check(_ mirror: Mirror) -> Report {
        var report = Report()
        if isShuttingDown { report.shutdown = "shutting down" }
        do { try mirror.index.ping() } catch { report.index = "index query failed: \(error)" }
        let n = probes.add(1, ordering: .relaxed).newValue
        let path = mirror.store.root.appendingPathComponent("tmp").appendingPathComponent(".readyz-\(getpid())-\(n)").path
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        if fd < 0 {
            report.storage = "cannot create a file in tmp/: \(String(cString: strerror(errno)))"
        } else {
            close(fd)
            if unlink(path) != 0 { report.storage = "cannot remove a file in tmp/: \(String(cString: strerror(errno)))" }
        }
        return report
    }
}
