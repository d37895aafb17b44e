import BlobStore
import Foundation
import OCI
import Synchronization

/// Where a preload stands: one entry per image, in the order given, plus totals. The same value is what
/// `cove preload` renders, whether it runs in the CLI process or inside `cove serve` (sent as JSON over the
/// admin socket), so both paths print the same.
public struct PreloadStatus: Codable, Sendable, Equatable {
    /// An image's state.
    public enum State: String, Codable, Sendable {
        /// Not started yet.
        case queued
        /// Fetching its manifest(s).
        case resolving
        /// Fetching configs and layers.
        case fetching
        /// Complete and pinned.
        case done
        /// Failed; `error` says why. Nothing is pinned for it.
        case failed
    }

    /// One image of the preload.
    public struct Image: Codable, Sendable, Equatable {
        /// The image as given.
        public var image: String
        /// As resolved: `registry/repository:tag` or `registry/repository@digest`; nil before it resolved.
        public var resolved: String?
        /// The top manifest's digest (image manifest or index), once known.
        public var digest: String?
        public var state: State
        /// Manifests of the image (top, selected platform manifests, referrers), all cached.
        public var manifests: Int = 0
        /// Distinct configs and layers selected.
        public var blobs: Int = 0
        /// Of those, how many were cached before (skipped) and how many this preload fetched (or joined a fill of).
        public var blobsCached: Int = 0
        public var blobsFetched: Int = 0
        /// Bytes of the selected blobs (sizes from the manifests; schema 1 layers count when fetched).
        public var bytes: Int64 = 0
        /// Bytes already cached before, and bytes transferred by this preload (fills in flight included).
        public var bytesCached: Int64 = 0
        public var bytesFetched: Int64 = 0
        /// Referrer manifests (signatures, SBOMs) taken along (`--with-referrers`).
        public var referrers: Int = 0
        /// Platforms of the index children selected (empty for a plain image manifest).
        public var platforms: [String] = []
        /// Why it failed (several lines: one per failed object).
        public var error: String?
        /// Seconds from its start to its end (or to now while it runs).
        public var seconds: Double = 0

        public init(image: String) {
            self.image = image
            state = .queued
        }

        /// Bytes done: cached before plus fetched.
        public var bytesDone: Int64 { bytesCached + bytesFetched }

        /// Bytes per second this image fetched so far.
        public var rate: Double { seconds > 0 ? Double(bytesFetched) / seconds : 0 }

        /// Seconds left for this image at its rate; nil before its sizes are known or anything moved.
        public var eta: Double? {
            guard state == .fetching, rate > 0 else { return nil }
            return Double(max(0, bytes - bytesDone)) / rate
        }
    }

    public var images: [Image]
    /// True once every image is done or failed.
    public var finished: Bool
    /// Seconds since the preload started.
    public var elapsed: Double

    public init(images: [Image], finished: Bool, elapsed: Double) {
        self.images = images
        self.finished = finished
        self.elapsed = elapsed
    }

    /// Totals over the images.
    public var bytes: Int64 { images.reduce(0) { $0 + $1.bytes } }
    public var bytesCached: Int64 { images.reduce(0) { $0 + $1.bytesCached } }
    public var bytesFetched: Int64 { images.reduce(0) { $0 + $1.bytesFetched } }
    public var blobs: Int { images.reduce(0) { $0 + $1.blobs } }
    public var blobsCached: Int { images.reduce(0) { $0 + $1.blobsCached } }
    public var blobsFetched: Int { images.reduce(0) { $0 + $1.blobsFetched } }
    public var manifests: Int { images.reduce(0) { $0 + $1.manifests } }
    public var failed: [Image] { images.filter { $0.state == .failed } }
    public var done: Int { images.filter { $0.state == .done }.count }

    /// Bytes per second fetched so far (0 before anything moved).
    public var rate: Double { elapsed > 0 ? Double(bytesFetched) / elapsed : 0 }

    /// Seconds left at the current rate, nil when unknown (nothing moved yet, or sizes not known yet).
    public var eta: Double? {
        let left = bytes - bytesCached - bytesFetched
        guard rate > 0, left >= 0, !images.contains(where: { $0.state == .queued || $0.state == .resolving }) else { return nil }
        return Double(left) / rate
    }
}

/// The live state of one preload: updated by `Preloader`, read (`snapshot`) by whoever renders it. Bytes of fills
/// in flight are read from the fills at snapshot time, so progress costs the transfer nothing.
public final class PreloadProgress: Sendable {
    struct State {
        var images: [PreloadStatus.Image]
        var started: [Int: ContinuousClock.Instant] = [:]
        var ended: [Int: ContinuousClock.Instant] = [:]
        /// Fills this preload waits for: image index and the fill (its bytes count as fetched while it runs).
        var active: [ObjectIdentifier: (Int, BlobFill)] = [:]
        var finished = false
    }

    private let state: Mutex<State>
    private let start = ContinuousClock.now

    public init(images: [String]) {
        state = Mutex(State(images: images.map { PreloadStatus.Image(image: $0) }))
    }

    /// The current status.
    public func snapshot() -> PreloadStatus {
        let now = ContinuousClock.now
        return state.withLock { s in
            var images = s.images
            for (_, (i, fill)) in s.active { images[i].bytesFetched += fill.bytesWritten }
            for i in images.indices {
                if let begin = s.started[i] { images[i].seconds = Self.seconds((s.ended[i] ?? now) - begin) }
            }
            return PreloadStatus(images: images, finished: s.finished, elapsed: Self.seconds(now - start))
        }
    }

    func update(_ i: Int, _ change: (inout PreloadStatus.Image) -> Void) {
        state.withLock { s in
            if s.started[i] == nil { s.started[i] = .now }
            change(&s.images[i])
            if s.images[i].state == .done || s.images[i].state == .failed { s.ended[i] = .now }
        }
    }

    /// Counts `fill`'s bytes for image `i` until `end(_:)`.
    func begin(_ i: Int, _ fill: BlobFill) {
        state.withLock { $0.active[ObjectIdentifier(fill)] = (i, fill) }
    }

    /// Stops counting `fill` live; its bytes are added by the caller when it committed.
    func end(_ fill: BlobFill) {
        _ = state.withLock { $0.active.removeValue(forKey: ObjectIdentifier(fill)) }
    }

    func finish() { state.withLock { $0.finished = true } }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
