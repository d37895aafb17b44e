import Foundation
import OCI
import Synchronization

/// Small verified manifests and tag rows (tag → digest, checked-at) held in memory in front of the SQLite index, so a
/// manifest or tag hit touches neither SQLite nor the file system. Bounded in bytes (bodies plus an estimate
/// of keys and bookkeeping); when over, the least recently used entries go until it is 7/8 full.
///
/// Kept true by the `CacheIndex` that owns it: every write that removes a blob row (eviction, `forgetBlob`,
/// `cove verify --repair`) forgets the manifest, and every tag write updates or drops the mapping, after
/// the transaction commits. A reader that filled from SQLite and the file system inserts only if no such write
/// happened since it started reading (`epoch`), so a removal that races with a read never leaves a stale
/// entry behind.
///
/// Manifests enter only after their bytes were verified against their digest; memory hits are not re-hashed.
public final class ManifestMemory: Sendable {
    /// A verified manifest as it is served.
    public struct Manifest: Sendable {
        public let digest: Digest
        /// `digest` as text (`algorithm:hex`), kept so a hit does not build it again.
        public let digestText: String
        /// The media type it was stored with.
        public let mediaType: String
        /// The byte-exact body.
        public let body: [UInt8]

        public init(digest: Digest, mediaType: String, body: [UInt8]) {
            self.digest = digest
            self.digestText = digest.description
            self.mediaType = mediaType
            self.body = body
        }
    }

    /// `registry` / `repository` : `tag`, as in the index's `tag` table.
    public struct TagKey: Hashable, Sendable {
        public let registry: String
        public let repository: String
        public let tag: String

        public init(registry: String, repository: String, tag: String) {
            self.registry = registry
            self.repository = repository
            self.tag = tag
        }
    }

    private struct Entry<Value> {
        var value: Value
        var cost: Int
        var lastUsed: UInt64
    }

    private struct State {
        var manifests: [Digest: Entry<Manifest>] = [:]
        var tags: [TagKey: Entry<TagRecord>] = [:]
        var bytes = 0
        var clock: UInt64 = 0
        /// Bumped by every removal and tag write.
        var epoch: UInt64 = 0
    }

    private let state = Mutex(State())
    /// The byte bound (0: nothing is kept).
    public let capacity: Int
    /// Largest single manifest kept: an eighth of the capacity, so a few large indexes cannot flush the rest.
    public var largestManifest: Int { capacity / 8 }
    /// Per-entry bytes counted on top of keys and bodies (dictionary slots, string and array headers).
    static let overhead = 160

    /// - Parameter capacity: bytes to hold at most (0 disables the memory).
    public init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The generation of removals and tag writes; pass it to `remember` after reading from disk.
    public var epoch: UInt64 { state.withLock { $0.epoch } }

    /// Entries and bytes held now.
    public var usage: (manifests: Int, tags: Int, bytes: Int) { state.withLock { ($0.manifests.count, $0.tags.count, $0.bytes) } }

    /// The manifest `digest`, if held (marks it used).
    public func manifest(_ digest: Digest) -> Manifest? {
        guard capacity > 0 else { return nil }
        return state.withLock { s in
            s.clock &+= 1
            return Self.use(&s.manifests, digest, at: s.clock)
        }
    }

    /// Holds a manifest read (and verified) from disk, unless a removal or tag write happened since `epoch`
    /// was read, or it is larger than `largestManifest`.
    public func remember(_ manifest: Manifest, since epoch: UInt64) {
        let cost = manifest.body.count + manifest.digestText.utf8.count + manifest.mediaType.utf8.count + Self.overhead
        guard capacity > 0, manifest.body.count <= largestManifest else { return }
        state.withLock { s in
            guard s.epoch == epoch else { return }
            s.clock &+= 1
            if let old = s.manifests.updateValue(Entry(value: manifest, cost: cost, lastUsed: s.clock), forKey: manifest.digest) {
                s.bytes -= old.cost
            }
            s.bytes += cost
            Self.shrink(&s, to: capacity)
        }
    }

    /// The row of a tag, if held (marks it used).
    public func tag(_ key: TagKey) -> TagRecord? {
        guard capacity > 0 else { return nil }
        return state.withLock { s in
            s.clock &+= 1
            return Self.use(&s.tags, key, at: s.clock)
        }
    }

    /// The value held under `key`, marked used at `now`.
    private static func use<Key: Hashable, Value>(_ entries: inout [Key: Entry<Value>], _ key: Key, at now: UInt64) -> Value? {
        guard let i = entries.index(forKey: key) else { return nil }
        entries.values[i].lastUsed = now
        return entries.values[i].value
    }

    /// Holds a tag row read from the index, unless a removal or tag write happened since `epoch`.
    public func remember(_ record: TagRecord, since epoch: UInt64) {
        guard capacity > 0 else { return }
        state.withLock { s in
            guard s.epoch == epoch else { return }
            Self.put(&s, record)
            Self.shrink(&s, to: capacity)
        }
    }

    // MARK: - Called by the owning CacheIndex after a write commits

    /// The rows of these digests are gone: drop the manifests.
    func forget(_ digests: some Sequence<String>) {
        guard capacity > 0 else { return }
        let parsed = digests.compactMap { try? Digest($0) }
        state.withLock { s in
            s.epoch &+= 1
            for d in parsed {
                if let old = s.manifests.removeValue(forKey: d) { s.bytes -= old.cost }
            }
        }
    }

    /// A tag row was written.
    func store(_ record: TagRecord) {
        guard capacity > 0 else { return }
        state.withLock { s in
            s.epoch &+= 1
            Self.put(&s, record)
            Self.shrink(&s, to: capacity)
        }
    }

    /// A tag row's `checkedAt` was set to `date` (its digest unchanged).
    func markChecked(_ key: TagKey, at date: Date) {
        guard capacity > 0 else { return }
        state.withLock { s in
            s.epoch &+= 1
            if let i = s.tags.index(forKey: key) { s.tags.values[i].value.checkedAt = date }
        }
    }

    /// Tag rows were written in bulk (bundle import): drop every mapping.
    func forgetTags() {
        guard capacity > 0 else { return }
        state.withLock { s in
            s.epoch &+= 1
            for e in s.tags.values { s.bytes -= e.cost }
            s.tags.removeAll()
        }
    }

    private static func put(_ s: inout State, _ record: TagRecord) {
        let key = TagKey(registry: record.registry, repository: record.repository, tag: record.tag)
        let cost = 2 * (record.registry.utf8.count + record.repository.utf8.count + record.tag.utf8.count) + record.digest.utf8.count + overhead
        s.clock &+= 1
        if let old = s.tags.updateValue(Entry(value: record, cost: cost, lastUsed: s.clock), forKey: key) { s.bytes -= old.cost }
        s.bytes += cost
    }

    /// Over `capacity`: drops the least recently used entries (manifests and tags alike) down to 7/8 of it.
    /// Sorting is amortised: it runs once per eighth of the capacity inserted.
    private static func shrink(_ s: inout State, to capacity: Int) {
        guard s.bytes > capacity else { return }
        enum Key { case manifest(Digest), tag(TagKey) }
        var all: [(lastUsed: UInt64, key: Key)] = []
        all.reserveCapacity(s.manifests.count + s.tags.count)
        for (k, e) in s.manifests { all.append((e.lastUsed, .manifest(k))) }
        for (k, e) in s.tags { all.append((e.lastUsed, .tag(k))) }
        all.sort { $0.lastUsed < $1.lastUsed }
        let target = capacity - capacity / 8
        for (_, key) in all {
            guard s.bytes > target else { break }
            switch key {
            case .manifest(let d): if let e = s.manifests.removeValue(forKey: d) { s.bytes -= e.cost }
            case .tag(let t): if let e = s.tags.removeValue(forKey: t) { s.bytes -= e.cost }
            }
        }
    }
}
