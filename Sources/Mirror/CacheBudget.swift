import BlobStore
import CacheIndex
import Foundation
import Logging
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Why an eviction pass ran.
public enum EvictionTrigger: String, Sendable {
    /// The cache grew past `max_size`.
    case maxSize = "max_size"
    /// The file system's free space fell below `min_free`.
    case minFree = "min_free"
    /// A fill needed room before it could start.
    case fill
    /// A write failed with ENOSPC / EDQUOT.
    case noSpace = "enospc"
    /// `cove gc` (or the admin socket's equivalent).
    case manual = "gc"
}

/// One object an eviction removed (or, in a dry run, would remove).
public struct EvictedObject: Sendable, Equatable {
    /// `algorithm:hex`.
    public var digest: String
    /// Bytes.
    public var size: Int64
}

/// What an eviction pass did.
public struct EvictionReport: Sendable {
    public var trigger: EvictionTrigger
    /// True when nothing was removed on purpose (`cove gc --dry-run`): `evicted` is what would go.
    public var dryRun: Bool
    /// Removed objects, least recently used first.
    public var evicted: [EvictedObject]
    /// Sum of `evicted` sizes, bytes.
    public var bytesFreed: Int64
    /// Bytes the pass set out to free (0: the cache was within its limits).
    public var bytesToFree: Int64
    /// Cached objects and bytes before and after (after = before − evicted).
    public var objectsBefore: Int
    public var bytesBefore: Int64
    public var objectsAfter: Int
    public var bytesAfter: Int64
    /// Bytes available on the storage file system before and after (nil when `statvfs` failed).
    public var freeBefore: Int64?
    public var freeAfter: Int64?
    /// The limits applied: `cache.max_size` (nil: none) and `cache.min_free` in bytes.
    public var maxSize: Int64?
    public var minFreeBytes: Int64
    /// Candidates left alone because a client was reading them or a fill was writing them.
    public var skippedInUse: Int
}

/// The cache's disk budget: tracks cached and reserved bytes against `max_size` and `min_free`, admits fills
/// (making room first), and runs eviction passes — in the background after commits, on a timer, on ENOSPC,
/// synchronously for a fill that needs room, and on demand (`cove gc`).
///
/// A pass evicts least recently used rows outside the pinned closure, never anything in use (`CacheUse`) or
/// younger than `evictionGrace`, in the order: claim → delete rows (one transaction that re-checks pins) →
/// unlink files → release the claim. Passes are serialized.
final class CacheBudget: Sendable {
    let index: CacheIndex
    let store: BlobStore
    let use: CacheUse
    let recorder: AccessRecorder
    let configuration: MirrorConfiguration
    let logger: Logger
    let metrics: MirrorMetrics

    struct State {
        /// Bytes the index records (nil until first needed: loading it costs a scan).
        var used: Int64?
        /// Bytes announced by fills in flight that will be kept.
        var reserved: Int64 = 0
        var running = false
        var again: EvictionTrigger?
        var runs = 0
        var last: EvictionReport?
    }

    let state = Mutex(State())
    /// Serializes passes (background, fill-side, manual).
    private let passLock = Mutex(0)
    /// Candidates read per query.
    static let batchSize = 512

    init(index: CacheIndex, store: BlobStore, use: CacheUse, recorder: AccessRecorder, configuration: MirrorConfiguration,
         metrics: MirrorMetrics = MirrorMetrics(), logger: Logger) {
        self.metrics = metrics
        self.index = index
        self.store = store
        self.use = use
        self.recorder = recorder
        self.configuration = configuration
        self.logger = logger
    }

    /// Bytes available to this process on the storage file system and its size, from `statvfs`.
    func space() -> (available: Int64, total: Int64)? {
        var s = statvfs()
        guard statvfs(store.root.path, &s) == 0 else { return nil }
        return (Int64(s.f_bavail) * Int64(s.f_frsize), Int64(s.f_blocks) * Int64(s.f_frsize))
    }

    private var limited: Bool {
        if configuration.maxSize != nil { return true }
        if case .bytes(0) = configuration.minFree { return false }
        if case .fraction(let f) = configuration.minFree, f <= 0 { return false }
        return true
    }

    /// Cached bytes as last counted, loading them from the index the first time.
    func usedBytes() -> Int64 {
        if let u = state.withLock({ $0.used }) { return u }
        let u = (try? index.totals().bytes) ?? 0
        state.withLock { if $0.used == nil { $0.used = u } }
        return u
    }

    /// Which limit is crossed now, if any, counting `incoming` bytes about to be written.
    func crossedLimit(incoming: Int64 = 0) -> EvictionTrigger? {
        guard limited else { return nil }
        if let max = configuration.maxSize {
            let used = usedBytes()
            if used + state.withLock({ $0.reserved }) > max { return .maxSize }
        }
        if let sp = space() {
            let minBytes = configuration.minFree.bytes(ofTotal: sp.total)
            if minBytes > 0, sp.available - incoming < minBytes { return .minFree }
        }
        return nil
    }

    // MARK: - Fill side

    /// Decides, on the fill's transfer thread, whether a blob of `size` bytes is kept: it reserves the bytes
    /// and, when a limit would be crossed, evicts synchronously — but only when a dry run shows the eviction
    /// can make enough room: evicting part of the cache for a blob that is then not kept anyway would lose
    /// content for nothing. When room cannot be made (everything left is pinned, in use or just committed) it
    /// retries for up to 2 s, then gives up and evicts nothing.
    /// - Returns: true to keep (the caller must `settle` the reservation); false to stream the blob to its
    ///   readers and discard it (a line is logged saying why).
    func admit(_ digest: Digest, size: Int64) -> Bool {
        guard limited else { return true }
        if let max = configuration.maxSize, size > max {
            logger.notice("blob is larger than the whole cache budget (cache.max_size); streaming it without keeping it", metadata: [
                "digest": "\(digest)", "bytes": "\(size)", "max_size": "\(max)",
            ])
            return false
        }
        if let sp = space(), size > sp.total - configuration.minFree.bytes(ofTotal: sp.total) {
            logger.notice("blob is larger than the storage file system allows (cache.min_free); streaming it without keeping it", metadata: [
                "digest": "\(digest)", "bytes": "\(size)", "filesystem_bytes": "\(sp.total)",
            ])
            return false
        }
        state.withLock { $0.reserved += size }
        for attempt in 0..<10 {
            guard crossedLimit(incoming: size) != nil else { return true }
            do {
                let plan = try pass(.fill, incoming: size, dryRun: true)
                if plan.bytesFreed >= plan.bytesToFree { _ = try pass(.fill, incoming: size) }
            } catch {
                logger.error("eviction for a fill failed", metadata: ["digest": "\(digest)", "error": "\(error)"])
            }
            guard crossedLimit(incoming: size) != nil else { return true }
            if attempt < 9 { Thread.sleep(forTimeInterval: 0.2) }
        }
        state.withLock { $0.reserved -= size }
        logger.warning("no room in the cache (what is left is pinned, being served or just fetched); streaming blob without keeping it",
                       metadata: ["digest": "\(digest)", "bytes": "\(size)"])
        return false
    }

    /// Ends a fill's reservation of `reserved` bytes; `stored` bytes were committed. Starts a background
    /// eviction when a limit is now crossed.
    func settle(reserved: Int64, stored: Int64) {
        state.withLock { s in
            s.reserved -= reserved
            if let u = s.used { s.used = u + stored }
        }
        if let why = crossedLimit() { trigger(why) }
    }

    /// Counts `bytes` committed outside fills (manifests, referrers lists) and starts a background eviction
    /// when a limit is now crossed.
    func noteStored(_ bytes: Int64) { settle(reserved: 0, stored: bytes) }

    // MARK: - Passes

    /// Starts a background pass unless one is running (then one more runs after it).
    func trigger(_ why: EvictionTrigger) {
        let start = state.withLock { s -> Bool in
            if s.running { s.again = why; return false }
            s.running = true
            return true
        }
        guard start else { return }
        // A thread of its own: a pass does blocking SQLite and unlink work that must not occupy the
        // cooperative pool (or an event loop) while requests are served.
        Thread.detachNewThread { [self] in
            var why = why
            while true {
                do { _ = try pass(why) } catch {
                    logger.error("background eviction failed", metadata: ["trigger": "\(why.rawValue)", "error": "\(error)"])
                }
                let next = state.withLock { s -> EvictionTrigger? in
                    defer { s.again = nil }
                    if s.again == nil { s.running = false }
                    return s.again
                }
                guard let next else { return }
                why = next
            }
        }
    }

    /// Background passes started and running now.
    var backgroundRunning: Bool { state.withLock { $0.running } }

    /// One eviction pass (blocking; callers off the cooperative pool or on a transfer thread).
    /// - Parameters:
    ///   - incoming: bytes a fill is about to write (counted against `min_free`).
    ///   - force: evict down to the low watermarks even when no limit is crossed (`cove gc`).
    ///   - dryRun: only report what would go.
    /// - Throws: GRDB's `DatabaseError` when the index cannot be read or written (nothing is half-done:
    ///   rows are deleted in one transaction, files unlinked only after it committed).
    func pass(_ why: EvictionTrigger, incoming: Int64 = 0, force: Bool = false, dryRun: Bool = false) throws -> EvictionReport {
        try passLock.withLock { _ in try runPass(why, incoming: incoming, force: force, dryRun: dryRun) }
    }

    private func runPass(_ why: EvictionTrigger, incoming: Int64, force: Bool, dryRun: Bool) throws -> EvictionReport {
        // LRU order needs the access times still in memory.
        do { try recorder.flush(to: index) } catch {
            logger.warning("could not write access times before eviction", metadata: ["error": "\(error)"])
        }
        let before = try index.totals()
        state.withLock { $0.used = before.bytes }
        let reserved = state.withLock { $0.reserved }
        let sp = space()
        let minBytes = sp.map { configuration.minFree.bytes(ofTotal: $0.total) } ?? 0
        var toFree: Int64 = 0
        if let max = configuration.maxSize {
            let low = Int64(Double(max) * configuration.lowWatermark)
            let load = before.bytes + reserved
            if force || load > max { toFree = Swift.max(toFree, load - low) }
        }
        if let sp, minBytes > 0 {
            // Down to min_free plus a tenth of it, so the next fill does not trigger a pass at once.
            let target = minBytes + minBytes / 10
            let available = sp.available - incoming
            if available < (force ? target : minBytes) { toFree = Swift.max(toFree, target - available) }
        }
        var evicted: [EvictedObject] = []
        var freed: Int64 = 0
        var skipped = 0
        var cursor: EvictionCandidate?
        let createdBefore = configuration.now().addingTimeInterval(-configuration.evictionGrace)
        while freed < toFree {
            let batch = try index.evictionCandidates(after: cursor, createdBefore: createdBefore, limit: Self.batchSize)
            guard let last = batch.last else { break }
            cursor = last
            var chosen: [EvictionCandidate] = []
            var planned = freed
            for c in batch where planned < toFree {
                if use.isInUse(c.digest) { skipped += 1; continue }
                chosen.append(c)
                planned += c.size
            }
            if dryRun {
                evicted += chosen.map { EvictedObject(digest: $0.digest, size: $0.size) }
                freed = planned
                continue
            }
            let claimed = use.claim(chosen.map(\.digest))
            skipped += chosen.count - claimed.count
            let removed: [(digest: String, size: Int64)]
            do {
                removed = try index.evict(claimed, createdBefore: createdBefore)
            } catch {
                use.endEviction(claimed)
                throw error
            }
            for r in removed {
                if let d = try? Digest(r.digest) { store.remove(d) }
                evicted.append(EvictedObject(digest: r.digest, size: r.size))
                freed += r.size
                metrics.evictedObjects.increment()
                metrics.evictedBytes.increment(by: r.size)
            }
            use.endEviction(claimed)
        }
        let report = EvictionReport(
            trigger: why, dryRun: dryRun, evicted: evicted, bytesFreed: freed, bytesToFree: Swift.max(0, toFree),
            objectsBefore: before.blobs, bytesBefore: before.bytes, objectsAfter: before.blobs - evicted.count, bytesAfter: before.bytes - freed,
            freeBefore: sp?.available, freeAfter: dryRun ? sp?.available : space()?.available,
            maxSize: configuration.maxSize, minFreeBytes: minBytes, skippedInUse: skipped)
        if !dryRun {
            state.withLock { s in
                s.used = report.bytesAfter
                s.runs += 1
                s.last = report
            }
            if !evicted.isEmpty || toFree > 0 {
                let level: Logger.Level = freed < toFree ? .warning : .info
                logger.log(level: level, "eviction", metadata: [
                    "trigger": "\(why.rawValue)", "objects": "\(evicted.count)", "bytes_freed": "\(freed)", "bytes_to_free": "\(toFree)",
                    "cache_bytes": "\(report.bytesAfter)", "skipped_in_use": "\(skipped)",
                ])
            }
        }
        return report
    }
}
