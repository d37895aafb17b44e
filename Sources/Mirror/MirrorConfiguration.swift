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

    public init(tagTTL: Double = 300, maxBlobSize: Int64? = nil, maxConcurrentFills: Int = 16, fillRetries: Int = 3, offline: Bool = false) {
        self.offline = offline
        self.tagTTL = tagTTL
        self.maxBlobSize = maxBlobSize
        self.maxConcurrentFills = maxConcurrentFills
        self.fillRetries = fillRetries
    }
}
