import BlobStore
import CacheIndex
import Foundation
import Logging
import OCI
import ServiceLifecycle
import Synchronization

/// Start-up reconciliation of index and disk after a crash, run in the background while the server already
/// serves.
///
/// Invariants it relies on (docs/ARCHITECTURE.md, "Crash safety"): a file enters `blobs/` only complete and
/// verified (rename), and before its index row is inserted; eviction and repairs delete the row before the
/// file. So after a crash at worst a file without a row exists (removed here), or, from the older "remove the
/// corrupt file, then forget its row" paths, a row without a file (forgotten here). `tmp/` is cleared before
/// serving by `BlobStore.init`.
///
/// Files that changed after `startedAt` belong to this process's fills and are never touched; every removal
/// re-checks the index just before it.
public final class StartupReconciliation: Sendable {
    /// What reconciliation did.
    public struct Summary: Codable, Sendable, Equatable {
        /// Files under `blobs/` looked at, and index rows.
        public var scannedFiles: Int
        public var scannedRows: Int
        /// Files without a row (or at no digest's path) removed.
        public var removedFiles: Int
        /// Rows without a file forgotten.
        public var forgottenRows: Int
        /// Wall-clock duration in seconds.
        public var seconds: Double
    }

    enum State {
        case pending
        case running
        case done(Summary)
        case failed(String)
    }

    let store: BlobStore
    let index: CacheIndex
    let logger: Logger
    /// When this process opened the storage; files changed later are this process's own.
    public let startedAt: Date
    private let state = Mutex(State.pending)

    /// - Parameter startedAt: take it before the server can commit anything (before it listens).
    public init(store: BlobStore, index: CacheIndex, startedAt: Date = Date(), logger: Logger) {
        self.store = store
        self.index = index
        self.startedAt = startedAt
        self.logger = logger
    }

    /// "pending", "running", what it did, or why it failed.
    public var statusText: String {
        switch state.withLock({ $0 }) {
        case .pending: "pending"
        case .running: "running"
        case .done(let s):
            String(format: "done in %.2f s: %d files and %d rows checked, %d orphan files removed, %d rows without files forgotten",
                   s.seconds, s.scannedFiles, s.scannedRows, s.removedFiles, s.forgottenRows)
        case .failed(let why): "failed: \(why)"
        }
    }

    /// Waits until reconciliation has finished (polling every 50 ms).
    /// - Returns: its summary; nil when it failed or the wait was cancelled.
    public func wait() async -> Summary? {
        while !Task.isCancelled {
            switch state.withLock({ $0 }) {
            case .done(let s): return s
            case .failed: return nil
            case .pending, .running: try? await Task.sleep(for: .milliseconds(50))
            }
        }
        return nil
    }

    /// Runs reconciliation once (later calls return at once). Stops early, leaving the rest for the next
    /// start, when the task is cancelled.
    public func run() async {
        let first = state.withLock { s -> Bool in
            guard case .pending = s else { return false }
            s = .running
            return true
        }
        guard first else { return }
        let clock = ContinuousClock.now
        do {
            var summary = try await reconcile()
            let elapsed = ContinuousClock.now - clock
            summary.seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            state.withLock { $0 = .done(summary) }
            logger.notice("start-up reconciliation finished", metadata: [
                "files": "\(summary.scannedFiles)", "rows": "\(summary.scannedRows)", "removed_files": "\(summary.removedFiles)",
                "forgotten_rows": "\(summary.forgottenRows)", "seconds": "\(String(format: "%.3f", summary.seconds))",
            ])
        } catch {
            state.withLock { $0 = .failed("\(error)") }
            logger.error("start-up reconciliation failed", metadata: ["error": "\(error)"])
        }
    }

    private func hasRow(_ digest: String) -> Bool {
        do { return try index.blob(digest) != nil } catch { return true }
    }

    private func reconcile() async throws -> Summary {
        // Rows first, then files: a file this process commits after the row read is newer than startedAt.
        let rows = try index.blobDigests()
        try Task.checkCancellation()
        let files = store.committedFiles()
        var summary = Summary(scannedFiles: files.count, scannedRows: rows.count, removedFiles: 0, forgottenRows: 0, seconds: 0)
        var present = Set<String>(minimumCapacity: files.count)
        for (i, file) in files.enumerated() {
            if i % 1024 == 0 { try Task.checkCancellation(); await Task.yield() }
            if let digest = file.digest?.description {
                present.insert(digest)
                if rows.contains(digest) { continue }
            }
            guard file.changedAt < startedAt else { continue }
            if let digest = file.digest {
                guard !hasRow(digest.description) else { continue }
                store.removeFile(relativePath: file.relativePath)
                // A fill of this process may have renamed the same digest into place and inserted its row in the
                // meantime; then it lost its file just now: forget that row so the next request refetches.
                if hasRow(digest.description) { _ = try? index.forgetBlob(digest.description, if: { !store.contains(digest) }) }
            } else {
                store.removeFile(relativePath: file.relativePath)
            }
            summary.removedFiles += 1
            logger.info("removed a file without an index row", metadata: ["path": "\(file.relativePath)"])
        }
        for (i, row) in rows.enumerated() where !present.contains(row) {
            if i % 1024 == 0 { try Task.checkCancellation(); await Task.yield() }
            let digest = try? Digest(row)
            if try index.forgetBlob(row, if: { digest.map { !store.contains($0) } ?? true }) {
                summary.forgottenRows += 1
                logger.info("forgot an index row without its file", metadata: ["digest": "\(row)"])
            }
        }
        return summary
    }
}

/// Runs a `StartupReconciliation` as a service of `cove serve`: at once, beside serving; on shutdown it stops
/// where it is (the next start finishes the job).
public struct ReconciliationService: Service {
    let reconciliation: StartupReconciliation

    public init(reconciliation: StartupReconciliation) { self.reconciliation = reconciliation }

    public func run() async throws {
        await cancelWhenGracefulShutdown { [reconciliation] in await reconciliation.run() }
        // A service that returns ends the whole group: stay until shutdown.
        try? await gracefulShutdown()
    }
}
