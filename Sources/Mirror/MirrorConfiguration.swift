import Foundation

/// Cache policy of a `Mirror`.
public struct MirrorConfiguration: Sendable {
    /// Seconds a cached tag → digest mapping is trusted before an upstream HEAD revalidates it.
    public var tagTTL: Double
    /// Largest blob Cove will fill, in bytes (nil: no limit). Larger blobs answer 400 `SIZE_INVALID` and are never cached.
    public var maxBlobSize: Int64?
    /// Upstream blob fills running at once; further fills wait in a FIFO queue.
    public var maxConcurrentFills: Int
    /// Times a dropped or stalled blob transfer is resumed (with `Range: bytes=N-`) before the fill fails.
    public var fillRetries: Int

    /// Never contact an upstream: serve what is cached (tags regardless of `tagTTL`), answer 404 otherwise.
    public var offline: Bool

    /// Most bytes the cache keeps (sum of cached blob and manifest sizes); nil: no limit. Crossing it starts
    /// an eviction down to `lowWatermark` of it.
    public var maxSize: Int64?
    /// Free space to keep on the storage file system; below it eviction runs until a tenth more is free.
    public var minFree: FreeSpace
    /// Fraction of `maxSize` an eviction brings the cache down to (0.9: 90 %).
    public var lowWatermark: Double
    /// Seconds after its commit during which content is never evicted (it was just fetched for someone).
    public var evictionGrace: Double
    /// Seconds between writes of batched access times (and free-space checks).
    public var maintenanceInterval: Double
    /// Bytes of verified manifests and tag rows held in memory in front of the index (`ManifestMemory`);
    /// 0: every manifest request reads SQLite and the file (and re-hashes it).
    public var manifestMemory: Int
    /// The clock for access times, commit times and the grace age (tests inject one instead of sleeping).
    public var now: @Sendable () -> Date

    public init(tagTTL: Double = 300, maxBlobSize: Int64? = nil, maxConcurrentFills: Int = 16, fillRetries: Int = 3, offline: Bool = false,
                maxSize: Int64? = nil, minFree: FreeSpace = .fraction(0.05), lowWatermark: Double = 0.9, evictionGrace: Double = 120,
                maintenanceInterval: Double = 30, manifestMemory: Int = 64 << 20, now: @escaping @Sendable () -> Date = { Date() }) {
        self.offline = offline
        self.tagTTL = tagTTL
        self.maxBlobSize = maxBlobSize
        self.maxConcurrentFills = maxConcurrentFills
        self.fillRetries = fillRetries
        self.maxSize = maxSize
        self.minFree = minFree
        self.lowWatermark = lowWatermark
        self.evictionGrace = evictionGrace
        self.maintenanceInterval = maintenanceInterval
        self.manifestMemory = manifestMemory
        self.now = now
    }
}

/// Free space to keep on the storage file system.
public enum FreeSpace: Sendable, Equatable, CustomStringConvertible {
    /// A number of bytes.
    case bytes(Int64)
    /// A fraction (0 ..< 1) of the file system's size.
    case fraction(Double)

    /// The bytes to keep free on a file system of `total` bytes.
    public func bytes(ofTotal total: Int64) -> Int64 {
        switch self {
        case .bytes(let b): b
        case .fraction(let f): Int64((Double(total) * f).rounded(.up))
        }
    }

    public var description: String {
        switch self {
        case .bytes(let b): "\(b) bytes"
        case .fraction(let f): "\((f * 100).formatted(.number.precision(.fractionLength(0...2))))%"
        }
    }
}
