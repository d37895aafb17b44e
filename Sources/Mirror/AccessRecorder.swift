import CacheIndex
import Foundation
import Synchronization

/// Collects cache accesses in memory and writes them to the index in one transaction per flush, so a hit
/// never writes SQLite itself. Also counts requests answered from the cache (hits) and requests that went
/// upstream (misses) for `cove stats`, persisted with the same flush.
final class AccessRecorder: Sendable {
    struct Pending {
        var times: [String: Date] = [:]
        var hits: Int64 = 0
        var misses: Int64 = 0
    }

    private let pending = Mutex(Pending())
    let now: @Sendable () -> Date

    init(now: @escaping @Sendable () -> Date) { self.now = now }

    /// Records an access to `digest` at the injected clock's time (for LRU).
    func hit(_ digest: String) {
        let t = now()
        pending.withLock { $0.times[digest] = t }
    }

    /// Counts a manifest or blob request answered from the cache.
    func countHit() { pending.withLock { $0.hits += 1 } }

    /// Counts a manifest or blob request that had to go upstream.
    func miss() { pending.withLock { $0.misses += 1 } }

    /// Hits and misses counted but not flushed yet.
    var pendingCounts: (hits: Int64, misses: Int64) { pending.withLock { ($0.hits, $0.misses) } }

    /// Accesses not yet written.
    var pendingCount: Int { pending.withLock { $0.times.count } }

    /// Writes everything recorded so far in one transaction. On failure the batch is put back (newer times win)
    /// and the error rethrown.
    func flush(to index: CacheIndex) throws {
        let batch = pending.withLock { p in defer { p = Pending() }; return p }
        guard !batch.times.isEmpty || batch.hits != 0 || batch.misses != 0 else { return }
        do {
            try index.recordAccesses(batch.times, counters: [CacheCounter.hits: batch.hits, CacheCounter.misses: batch.misses])
        } catch {
            pending.withLock { p in
                p.times.merge(batch.times) { max($0, $1) }
                p.hits += batch.hits
                p.misses += batch.misses
            }
            throw error
        }
    }
}
