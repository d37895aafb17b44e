import Foundation
import Synchronization

/// In-memory counters of a running mirror since it started (not persisted: `cove stats` reports them only when
/// it reaches a running server through its admin socket).
public final class CacheCounters: Sendable {
    private let hitCount = Atomic<Int>(0)
    private let missCount = Atomic<Int>(0)
    private let evictionCount = Atomic<Int>(0)
    private let evictedByteCount = Atomic<Int64>(0)
    /// When the counting started (the mirror opened).
    public let since = Date()

    public init() {}

    /// A manifest or blob request answered from the cache without fetching its content upstream.
    public func recordHit() { hitCount.add(1, ordering: .relaxed) }
    /// A manifest or blob request that had to fetch (or revalidate and refetch) its content upstream.
    public func recordMiss() { missCount.add(1, ordering: .relaxed) }
    /// Hook for the eviction engine: `count` entries of `bytes` bytes in total were evicted.
    public func recordEvictions(_ count: Int, bytes: Int64) {
        evictionCount.add(count, ordering: .relaxed)
        evictedByteCount.add(bytes, ordering: .relaxed)
    }

    public var hits: Int { hitCount.load(ordering: .relaxed) }
    public var misses: Int { missCount.load(ordering: .relaxed) }
    public var evictions: Int { evictionCount.load(ordering: .relaxed) }
    public var evictedBytes: Int64 { evictedByteCount.load(ordering: .relaxed) }
}
