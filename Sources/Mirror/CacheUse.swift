import Foundation
import Synchronization

/// Which cached digests are in use right now — being served, being filled, or being stored — and which are
/// being evicted. Eviction claims only digests nobody uses; users of a digest being evicted wait (briefly)
/// before they write it again, so an eviction's unlink can never remove a file that was just re-committed.
///
/// Keys are digest strings (`sha256:…`), as in the index.
public final class CacheUse: Sendable {
    struct State {
        var readers: [String: Int] = [:]
        var filling: [String: Int] = [:]
        var evicting: Set<String> = []
    }

    private let state = Mutex(State())

    public init() {}

    /// Marks `digest` as being read until the returned lease is released (dropped). Never waits: a reader
    /// that races an eviction either opened the file before the unlink (its descriptor keeps the bytes) or
    /// finds no row (a miss).
    public func acquire(_ digest: String) -> BlobLease {
        state.withLock { $0.readers[digest, default: 0] += 1 }
        return BlobLease(use: self, digest: digest)
    }

    /// Like `acquire`, then blocks (at most `seconds`, normally microseconds) until an eviction of `digest`
    /// that was already under way has unlinked its file: for code about to write the digest's file or row.
    public func acquireForWrite(_ digest: String, seconds: Double = 30) -> BlobLease {
        let lease = acquire(digest)
        waitUntilNotEvicting(digest, seconds: seconds)
        return lease
    }

    fileprivate func release(_ digest: String) {
        state.withLock { s in
            if let n = s.readers[digest], n > 1 { s.readers[digest] = n - 1 } else { s.readers[digest] = nil }
        }
    }

    /// Marks a fill of `digest` as in flight (from its start until its index row is written).
    func beginFill(_ digest: String) { state.withLock { $0.filling[digest, default: 0] += 1 } }

    func endFill(_ digest: String) {
        state.withLock { s in
            if let n = s.filling[digest], n > 1 { s.filling[digest] = n - 1 } else { s.filling[digest] = nil }
        }
    }

    /// Blocks the calling thread (at most `seconds`) until no eviction of `digest` is under way: a fill does
    /// this right before renaming its file into the store.
    func waitUntilNotEvicting(_ digest: String, seconds: Double = 30) {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while state.withLock({ $0.evicting.contains(digest) }), ContinuousClock.now < deadline { usleep(2000) }
    }

    /// True when `digest` is being read, filled or stored.
    public func isInUse(_ digest: String) -> Bool {
        state.withLock { $0.readers[digest] != nil || $0.filling[digest] != nil }
    }

    /// Readers holding a lease on `digest` now.
    public func readers(of digest: String) -> Int { state.withLock { $0.readers[digest] ?? 0 } }

    /// Claims for eviction those of `digests` nobody uses; the rest are skipped.
    func claim(_ digests: [String]) -> [String] {
        state.withLock { s in
            digests.filter { d in
                guard s.readers[d] == nil, s.filling[d] == nil, !s.evicting.contains(d) else { return false }
                s.evicting.insert(d)
                return true
            }
        }
    }

    /// Ends the claim on `digests` (their rows are deleted and files unlinked, or left alone).
    func endEviction(_ digests: [String]) {
        state.withLock { s in for d in digests { s.evicting.remove(d) } }
    }
}

/// A hold on a digest (see `CacheUse`); released when dropped. Keep it alive as long as the content is
/// being read (for a blob response: until the body is written).
public final class BlobLease: Sendable {
    let use: CacheUse
    /// The digest held.
    public let digest: String

    init(use: CacheUse, digest: String) {
        self.use = use
        self.digest = digest
    }

    deinit { use.release(digest) }
}
