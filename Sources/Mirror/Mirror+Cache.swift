import CacheIndex
import Foundation
import OCI

/// The outcome of `Mirror.pin`.
public struct PinResult: Sendable {
    /// The image as resolved (registry, upstream repository, reference).
    public var image: ImageReference
    /// The manifest digest the pin protects now; nil when the reference is not cached yet (the pin then
    /// protects it once a pull fills it, for a tag).
    public var digest: String?
    /// True when the manifest is cached.
    public var cached: Bool
    /// Cached objects (manifests and blobs, children of an index included) and their bytes now protected.
    public var objects: Int
    public var bytes: Int64
}

extension Mirror {
    /// Runs an eviction pass now, off the cooperative pool: down to the low watermark of `max_size` and to
    /// `min_free` plus a tenth, whether or not a limit is crossed (`cove gc`). Nothing pinned, in use or
    /// younger than the grace age goes.
    /// - Parameter dryRun: report what would be evicted without removing anything.
    /// - Returns: the report (objects and bytes freed, before/after).
    /// - Throws: GRDB's `DatabaseError` when the index cannot be read or written.
    public func collectGarbage(dryRun: Bool = false) async throws -> EvictionReport {
        let budget = budget
        return try await withCheckedThrowingContinuation { c in
            Thread.detachNewThread {
                c.resume(with: Result { try budget.pass(.manual, force: true, dryRun: dryRun) })
            }
        }
    }

    /// Pins `image` (`registry/name:tag`, `registry/name@digest`, or a short Docker Hub name; see
    /// `ImageReference`): eviction never removes it or, for an index, its children. A tag pin also protects
    /// whatever the tag resolves to later. Works whether or not the image is cached.
    /// - Throws: `DistributionError` for a malformed or unroutable name; GRDB's `DatabaseError`.
    public func pin(_ image: String) throws -> PinResult {
        try pin(try ImageReference.parse(image, router: router))
    }

    /// Pins an image already resolved (as `pin(_:)` does for its text).
    /// - Throws: GRDB's `DatabaseError`.
    public func pin(_ ref: ImageReference) throws -> PinResult {
        let digest: String?
        switch ref.reference {
        case .digest(let d): digest = d.description
        case .tag(let t): digest = try index.tag(registry: ref.registry, repository: ref.repository.value, tag: t.value)?.digest
        }
        try index.pin(PinRecord(registry: ref.registry, repository: ref.repository.value, reference: ref.reference.description,
                                digest: digest, pinnedAt: configuration.now()))
        let cached = try digest.map { try index.manifest($0) != nil } ?? false
        let closure = try digest.map { try index.cachedClosure(of: $0) } ?? (count: 0, bytes: 0)
        return PinResult(image: ref, digest: digest, cached: cached, objects: closure.count, bytes: closure.bytes)
    }

    /// Removes the pin of `image` (written as for `pin`).
    /// - Returns: the resolved image and whether a pin was removed (false: it was not pinned).
    /// - Throws: `DistributionError` for a malformed or unroutable name; GRDB's `DatabaseError`.
    public func unpin(_ image: String) throws -> (image: ImageReference, removed: Bool) {
        let ref = try ImageReference.parse(image, router: router)
        let removed = try index.unpin(registry: ref.registry, repository: ref.repository.value, reference: ref.reference.description)
        return (ref, removed)
    }

    /// Every pin.
    /// - Throws: GRDB's `DatabaseError`.
    public func pins() throws -> [PinRecord] { try index.pins() }

    /// Writes batched access times and hit/miss counters now (also done every `maintenanceInterval` by
    /// `maintainCache`, before each eviction pass, and on `close`).
    /// - Throws: GRDB's `DatabaseError` (the batch is kept for the next flush).
    public func flushAccessTimes() throws { try recorder.flush(to: index) }

    /// Periodic cache upkeep until the task is cancelled: every `maintenanceInterval` seconds, writes batched
    /// access times and starts a background eviction when `max_size` or `min_free` is crossed (the free
    /// space can shrink without Cove writing). Flushes once more when cancelled.
    public func maintainCache() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(Int64(configuration.maintenanceInterval * 1000)))
            do { try recorder.flush(to: index) } catch {
                logger.warning("could not write access times", metadata: ["error": "\(error)"])
            }
            if let why = budget.crossedLimit() { budget.trigger(why) }
        }
        try? recorder.flush(to: index)
    }

    /// Eviction passes run since start (background, fill-side and manual; dry runs excluded).
    public var evictionRuns: Int { budget.state.withLock { $0.runs } }

    /// The last pass's report, if any ran.
    public var lastEviction: EvictionReport? { budget.state.withLock { $0.last } }

    /// True while a background eviction pass runs.
    public var evictionRunning: Bool { budget.backgroundRunning }

    /// Digests in use (read, filled, stored) and being evicted.
    public var cacheUse: CacheUse { use }

    /// Bytes cached (as last counted) and reserved by fills in flight.
    public var cacheBytes: (cached: Int64, reserved: Int64) { (budget.usedBytes(), budget.state.withLock { $0.reserved }) }
}
