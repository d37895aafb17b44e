import BlobStore
import CacheIndex
import Foundation
import Logging
import OCI
import Upstream

/// A manifest ready to serve: byte-exact body and the media type it was stored with.
public struct ServedManifest: Sendable {
    public var digest: Digest
    public var mediaType: String
    public var body: [UInt8]
    /// True when the upstream could not revalidate a tag and the cached mapping was served anyway
    /// (stale-if-error).
    public var stale: Bool
}

/// Where a blob's bytes come from.
public enum BlobBody: Sendable {
    /// A committed file.
    case file(BlobFile)
    /// A fill in flight; bytes become readable as they land and verify.
    case fill(BlobFill)
}

/// A blob ready to serve.
public struct ServedBlob: Sendable {
    public var digest: Digest
    /// Size in bytes.
    public var size: Int64
    public var mediaType: String
    public var body: BlobBody
    /// Keeps the blob from being evicted while it is served: hold it until the response body is written.
    public var lease: BlobLease?
}

/// The pull-through cache: answers manifests, blobs and tag lists from the local cache and fills it from the
/// upstream on a miss.
///
/// Rules (docs/ARCHITECTURE.md): digest-addressed content is served from cache without
/// contacting the upstream; a cached tag is trusted for `tagTTL` seconds, then revalidated with an upstream
/// HEAD and re-fetched only if its digest changed; when revalidation fails the cached manifest is served
/// (stale-if-error). Everything stored is verified against its digest first.
public final class Mirror: Sendable {
    public let configuration: MirrorConfiguration
    public let store: BlobStore
    public let index: CacheIndex
    /// Where requests go upstream.
    public let router: UpstreamRouter
    let logger: Logger
    let fills: BlobFills
    let manifestFlights = SingleFlight<String, ServedManifest>()
    /// Digests being read, filled or evicted.
    let use = CacheUse()
    /// Access times and hit/miss counts, written to the index in batches.
    let recorder: AccessRecorder
    /// `max_size` / `min_free` accounting and eviction.
    let budget: CacheBudget
    /// Counters and gauges for `/metrics` and the status page.
    public let metrics: MirrorMetrics

    /// Opens the cache under `storage` (creating `index.sqlite`, `blobs/`, `tmp/`).
    /// - Parameter removingTemporaryFiles: clear `tmp/` (fills a previous process left); false for maintenance
    ///   commands, so `cove verify` can report them.
    /// - Parameter metrics: where cache metrics go (default: the global `MetricsSystem`).
    /// - Throws: `BlobStoreError` or a database error when the storage cannot be opened.
    public init(storage: URL, router: UpstreamRouter, configuration: MirrorConfiguration, logger: Logger,
                removingTemporaryFiles: Bool = true, metrics: MirrorMetrics = MirrorMetrics()) throws {
        self.configuration = configuration
        self.metrics = metrics
        self.store = try BlobStore(root: storage, removingTemporaryFiles: removingTemporaryFiles)
        self.index = try CacheIndex(path: storage.appendingPathComponent("index.sqlite").path, memoryCapacity: configuration.manifestMemory)
        self.router = router
        self.logger = logger
        self.recorder = AccessRecorder(now: configuration.now)
        self.budget = CacheBudget(index: index, store: store, use: use, recorder: recorder, configuration: configuration,
                                  metrics: metrics, logger: logger)
        self.fills = BlobFills(store: store, index: index, configuration: configuration, use: use, budget: budget, metrics: metrics, logger: logger)
    }

    /// Writes pending access times, then releases the storage directory (its lock) for another process; the
    /// mirror must not serve afterwards.
    public func close() {
        try? recorder.flush(to: index)
        store.close()
    }

    /// Waits until no fill is in flight, at most `seconds`: on shutdown, so verified downloads are committed
    /// to the store rather than thrown away.
    /// - Returns: the number of fills still running when it gave up.
    public func drainFills(within seconds: Double) async -> Int {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline, !Task.isCancelled {
            let n = await fills.activeCount
            if n == 0 { return 0 }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return await fills.activeCount
    }

    /// The temp files (`tmp/<name>`, relative to the storage root) of the fills in flight now.
    public func fillTemporaryFiles() async -> Set<String> { await fills.temporaryPaths() }

    /// The fill in flight for `digest`, if any (for status and tests: its readers, its progress).
    public func fillInFlight(_ digest: Digest) async -> BlobFill? { await fills.inFlight(digest) }

    /// Blob fills that ended without a verified blob (upstream errors, verification failures), since start.
    public var failedFills: Int { fills.failures.load(ordering: .relaxed) }

    // MARK: - Manifests

    /// The manifest for `name` at `reference` (OCI distribution spec, "Pulling manifests").
    /// - Throws: `DistributionError`: `MANIFEST_UNKNOWN` (404) when neither cache nor upstream has it,
    ///   `DENIED`, `TOOMANYREQUESTS` or `UNAVAILABLE` (503) for upstream failures, `UNAVAILABLE` (502) when
    ///   every endpoint's bytes failed to match their digest.
    public func manifest(_ registry: RegistryClient, _ name: RepositoryName, _ reference: Reference) async throws(DistributionError) -> ServedManifest {
        let upstreamName = registry.upstreamName(for: name)
        let served = try await lookUpManifest(registry, name, upstreamName, reference)
        // Answered pulls only: 404s for names that do not exist must not crowd the status page's top list.
        metrics.pulled("\(registry.name)/\(upstreamName)")
        return served
    }

    private func lookUpManifest(_ registry: RegistryClient, _ name: RepositoryName, _ upstreamName: RepositoryName,
                                _ reference: Reference) async throws(DistributionError) -> ServedManifest {
        switch reference {
        case .digest(let digest):
            if let cached = try cachedManifest(digest) { recorder.countHit(); metrics.manifest(.hit); return cached }
            try requireOnline("manifest \(name)@\(digest)", code: .manifestUnknown)
            return try await flight("\(registry.name)/\(upstreamName)@\(digest)") { [self] () throws(DistributionError) in
                if let cached = try cachedManifest(digest) { return cached }
                return try await fetchManifest(registry, upstreamName, reference, expected: digest)
            }
        case .tag(let tag):
            if let record = try indexRead({ try index.tag(registry: registry.name, repository: upstreamName.value, tag: tag.value) }),
               let digest = try? Digest(record.digest), let cached = try cachedManifest(digest),
               servesCacheOnly || Date().timeIntervalSince(record.checkedAt) < configuration.tagTTL {
                recorder.countHit()
                metrics.manifest(.hit)
                return cached
            }
            try requireOnline("manifest \(name):\(tag)", code: .manifestUnknown)
            return try await flight("\(registry.name)/\(upstreamName):\(tag)") { [self] () throws(DistributionError) in
                try await resolveTag(registry, upstreamName, tag)
            }
        }
    }

    /// Runs an index read. A failing read is not a miss: treating it as one would send the request upstream
    /// (or answer 404 offline) for content the cache holds, so it becomes 503 `UNAVAILABLE` and a log line.
    func indexRead<T>(_ read: () throws -> T) throws(DistributionError) -> T {
        do {
            return try read()
        } catch {
            logger.error("cache index read failed", metadata: ["error": "\(error)"])
            throw DistributionError(.unavailable, "the cache index cannot be read right now; try again later")
        }
    }

    /// In offline mode a miss is final: 404 without contacting any upstream.
    private func requireOnline(_ subject: String, code: DistributionErrorCode) throws(DistributionError) {
        if servesCacheOnly { throw DistributionError(code, "\(subject) is not cached and this mirror is offline") }
    }

    private func flight(_ key: String, _ op: @escaping @Sendable () async throws(DistributionError) -> ServedManifest) async throws(DistributionError) -> ServedManifest {
        recorder.miss()
        do {
            let served = try await manifestFlights.run(key) { try await op() }
            metrics.manifest(served.stale ? .stale : .miss)
            return served
        } catch let e as DistributionError {
            metrics.manifest(.miss)
            throw e
        } catch {
            throw DistributionError(.unknown, "\(error)")
        }
    }

    /// Revalidates (or first resolves) a tag: HEAD upstream, GET only when the digest is new.
    private func resolveTag(_ registry: RegistryClient, _ name: RepositoryName, _ tag: Tag) async throws(DistributionError) -> ServedManifest {
        let record = try indexRead { try index.tag(registry: registry.name, repository: name.value, tag: tag.value) }
        var cached: ServedManifest?
        if let record, let digest = try? Digest(record.digest) { cached = try cachedManifest(digest) }
        guard let cached else { return try await fetchManifest(registry, name, .tag(tag), expected: nil) }
        if Date().timeIntervalSince(record!.checkedAt) < configuration.tagTTL { return cached }
        // One deadline for the HEAD and the GET after it: the client gets the new or the stale manifest in time.
        let deadline = registry.operationDeadline()
        do {
            let head = try await registry.manifest(name, .tag(tag), method: "HEAD", quick: true, deadline: deadline).head
            if let d = head["Docker-Content-Digest"], d == cached.digest.description {
                try? index.markTagChecked(registry: registry.name, repository: name.value, tag: tag.value)
                return cached
            }
        } catch {
            if case .status(let head, _) = error, head.status == 404 {
                throw DistributionError(.manifestUnknown, "manifest \(name):\(tag) not found upstream")
            }
            logger.warning("tag revalidation failed; serving cached manifest", metadata: [
                "repository": "\(name)", "tag": "\(tag)", "error": "\(error)",
            ])
            var stale = cached
            stale.stale = true
            return stale
        }
        do {
            return try await fetchManifest(registry, name, .tag(tag), expected: nil, deadline: deadline)
        } catch where [.unavailable, .tooManyRequests, .denied].contains(error.code) {
            var stale = cached
            stale.stale = true
            return stale
        }
    }

    /// GETs a manifest, verifies it, stores it byte-exact and records the tag if fetched by tag.
    private func fetchManifest(_ registry: RegistryClient, _ name: RepositoryName, _ reference: Reference, expected: Digest?,
                               deadline: Deadline? = nil) async throws(DistributionError) -> ServedManifest {
        let response: UpstreamResponse
        do {
            // Checked per endpoint: an answer that is not a manifest, or bytes that do not match the requested
            // (or announced) digest, send the request on to the next endpoint instead of failing it.
            response = try await registry.manifest(name, reference, method: "GET", deadline: deadline) { response in
                if case .refused(let why) = Self.accept(response, expected: expected) { return why }
                return nil
            }
        } catch {
            throw .from(error, notFound: .manifestUnknown, subject: "manifest \(name):\(reference)")
        }
        guard case .accepted(let accepted) = Self.accept(response, expected: expected) else {
            throw DistributionError(.unavailable, "manifest \(name):\(reference): upstream answer changed under verification", status: 502)
        }
        let (body, digest, summary, mediaType) = (response.body, accepted.digest, accepted.summary, accepted.mediaType)
        metrics.upstreamManifestBytes.increment(by: body.count)
        // Held while file and rows are written, so an eviction of the same digest cannot unlink the file
        // under the new row.
        let lease = use.acquireForWrite(digest.description)
        defer { withExtendedLifetime(lease) {} }
        do {
            if !store.contains(digest) {
                try store.putManifest(body, mediaType: mediaType, as: digest)
                budget.noteStored(Int64(body.count))
            }
            let children = summary.manifests.map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "manifest", size: $0.size, platform: $0.platform)
            } + summary.blobs.map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "blob", size: $0.size, platform: nil)
            }
            try index.insertManifest(ManifestRecord(digest: digest.description, mediaType: mediaType, registry: registry.name, repository: name.value),
                                     size: Int64(body.count), children: children, now: configuration.now())
            if case .tag(let tag) = reference {
                let now = Date()
                try index.upsertTag(TagRecord(registry: registry.name, repository: name.value, tag: tag.value, digest: digest.description, fetchedAt: now, checkedAt: now))
            }
        } catch {
            // Serving still works from memory; the next request will try to store again.
            logger.error("could not store manifest", metadata: ["digest": "\(digest)", "error": "\(error)"])
            if case .noSpace = error as? BlobStoreError { budget.trigger(.noSpace) }
        }
        return ServedManifest(digest: digest, mediaType: mediaType, body: body, stale: false)
    }

    /// A manifest answer that passed every check (what to store and serve), or why it did not.
    enum ManifestVerdict {
        case accepted(AcceptedManifest)
        case refused(String)
    }

    struct AcceptedManifest {
        var digest: Digest
        var summary: ManifestSummary
        var mediaType: String
    }

    /// Checks an upstream's manifest answer: it must be a manifest by media type and shape
    /// (`ManifestSummary.validating`), and its digest (schema 1 rules included) must equal the requested one,
    /// else the upstream's `Docker-Content-Digest` when it sent one.
    /// - Returns: the accepted manifest, or why it was refused, naming the upstream that sent it.
    static func accept(_ response: UpstreamResponse, expected: Digest?) -> ManifestVerdict {
        let origin = URLParts(response.url)?.origin ?? "upstream"
        let summary: ManifestSummary, mediaType: String
        do {
            (summary, mediaType) = try ManifestSummary.validating(response.body, contentType: response.head["Content-Type"])
        } catch {
            return .refused("\(origin) \(error.message)")
        }
        let announced = response.head["Docker-Content-Digest"].flatMap { try? Digest($0) }
        let check = expected ?? announced
        let digest = ManifestDigest.of(response.body, mediaType: mediaType, algorithm: check?.algorithm ?? .sha256)
        if let check, check != digest { return .refused("\(origin) sent a manifest whose digest is \(digest), not \(check)") }
        return .accepted(AcceptedManifest(digest: digest, summary: summary, mediaType: mediaType))
    }

    /// A manifest from the cache, or nil: from memory when held there (verified when it entered, not
    /// re-hashed), else from disk. Bytes read from disk are re-verified on every read: a file that vanished,
    /// shrank or was altered is removed and forgotten (and re-fetched when online); verified ones enter memory.
    /// - Throws: `UNAVAILABLE` (503) when the file is there but cannot be read now (e.g. out of descriptors):
    ///   the content is kept.
    private func cachedManifest(_ digest: Digest) throws(DistributionError) -> ServedManifest? {
        let memory = index.memory
        if let held = memory.manifest(digest) {
            recorder.hit(held.digestText)
            return ServedManifest(digest: digest, mediaType: held.mediaType, body: held.body, stale: false)
        }
        // Read before the row: a removal after this point keeps what is read below out of memory.
        let epoch = memory.epoch
        let lease = use.acquire(digest.description)
        defer { withExtendedLifetime(lease) {} }
        guard let (record, _) = try indexRead({ try index.manifest(digest.description) }) else { return nil }
        switch store.read(digest) {
        case .failure(.missing):
            logger.warning("index row without a file; forgetting it", metadata: ["digest": "\(digest)"])
            try? index.forgetBlob(digest.description)
            return nil
        case .failure(.io(let why)):
            throw DistributionError(.unavailable, "cannot read cached manifest \(digest): \(why)")
        case .success(let body):
            guard ManifestDigest.of(body, mediaType: record.mediaType, algorithm: digest.algorithm) == digest else {
                logger.error("cached manifest is corrupt; removing it", metadata: ["digest": "\(digest)", "bytes": "\(body.count)"])
                store.remove(digest)
                try? index.forgetBlob(digest.description)
                return nil
            }
            recorder.hit(digest.description)
            memory.remember(.init(digest: digest, mediaType: record.mediaType, body: body), since: epoch)
            return ServedManifest(digest: digest, mediaType: record.mediaType, body: body, stale: false)
        }
    }

    // MARK: - Blobs

    /// The blob `digest`, served from the cache or from a (possibly shared) fill.
    /// - Throws: `BLOB_UNKNOWN` (404) when the upstream lacks it; `DENIED`, `TOOMANYREQUESTS`, `UNAVAILABLE`
    ///   for upstream failures; `SIZE_INVALID` when it exceeds the configured maximum size; `UNAVAILABLE`
    ///   when the fill fails before its size is known.
    public func blob(_ registry: RegistryClient, _ name: RepositoryName, _ digest: Digest) async throws(DistributionError) -> ServedBlob {
        if let hit = try cachedBlob(digest) { recorder.countHit(); metrics.blob(.hit); return hit }
        recorder.miss()
        if servesCacheOnly, await fills.inFlight(digest) == nil {
            throw DistributionError(.blobUnknown, "blob \(digest) is not cached and this mirror is offline")
        }
        let fill: BlobFill
        let lease = use.acquire(digest.description)
        do {
            // Without the upstream, only a fill already in flight may be joined: attaching could start one.
            let attached = servesCacheOnly ? await fills.inFlight(digest).map { (fill: $0, started: false) } : try await fills.attach(registry, name, digest)
            guard let f = attached else {
                if let hit = try cachedBlob(digest) { metrics.blob(.hit); return hit }
                if servesCacheOnly { throw DistributionError(.blobUnknown, "blob \(digest) is not cached and this mirror is offline") }
                throw DistributionError(.unavailable, "blob \(digest) vanished while being served")
            }
            fill = f.fill
            metrics.blob(f.started ? .miss : .fillJoin)
        } catch let e as DistributionError {
            throw e
        } catch {
            throw DistributionError(.unavailable, "cannot start fill: \(error)")
        }
        do {
            let size = try await fill.waitForSize()
            if let endpoint = fill.sourceLabel { RequestTrace.record(endpoint: endpoint) }
            return ServedBlob(digest: digest, size: size, mediaType: MediaType.octetStream, body: .fill(fill), lease: lease)
        } catch let e as DistributionError {
            throw e
        } catch {
            throw DistributionError(.unknown, "\(error)")
        }
    }

    /// Size and media type of a blob for HEAD: from the cache, a fill in flight, or an upstream HEAD (which
    /// does not start a fill).
    /// - Throws: as `blob(_:_:)`.
    public func blobHead(_ registry: RegistryClient, _ name: RepositoryName, _ digest: Digest) async throws(DistributionError) -> (size: Int64, mediaType: String) {
        // HEADs are not counted as cache requests (no body moves), but the access log says how they were answered.
        if let hit = try cachedBlob(digest) { RequestTrace.record(.hit); return (hit.size, hit.mediaType) }
        if let fill = await fills.inFlight(digest), let size = try? await fill.waitForSize() {
            RequestTrace.record(.fillJoin)
            return (size, MediaType.octetStream)
        }
        try requireOnline("blob \(digest)", code: .blobUnknown)
        RequestTrace.record(.miss)
        do {
            let head = try await registry.blobHead(registry.upstreamName(for: name), digest)
            if MediaType.isHTML(head["Content-Type"]) {
                throw DistributionError(.unavailable, "upstream answered Content-Type text/html for blob \(digest), not the blob", status: 502)
            }
            guard let size = head.contentLength else {
                throw DistributionError(.unavailable, "upstream HEAD for blob \(digest) gave no Content-Length")
            }
            if let announced = head["Docker-Content-Digest"], announced != digest.description {
                throw DistributionError(.unavailable, "upstream HEAD for blob \(digest) announced digest \(announced)")
            }
            return (size, head["Content-Type"] ?? MediaType.octetStream)
        } catch let e as DistributionError {
            throw e
        } catch let e as UpstreamError {
            throw .from(e, notFound: .blobUnknown, subject: "blob \(digest)")
        } catch {
            throw DistributionError(.unknown, "\(error)")
        }
    }

    /// A blob from the cache, or nil. A missing file or one whose size differs from the index is removed and
    /// forgotten (re-fetched when online). Blobs are not re-hashed per request (that would cost a full read);
    /// same-size corruption is caught by clients' digest checks.
    /// - Throws: `UNAVAILABLE` (503) when the file exists but cannot be opened now; the content is kept.
    private func cachedBlob(_ digest: Digest) throws(DistributionError) -> ServedBlob? {
        let key = digest.description
        // Taken before the row is read: from here on no eviction claims the digest.
        let lease = use.acquire(key)
        guard let record = try indexRead({ try index.blob(key) }) else { return nil }
        switch store.open(digest) {
        case .failure(.io(let why)):
            throw DistributionError(.unavailable, "cannot open cached blob \(digest): \(why)")
        case .failure(.missing):
            logger.warning("index row without a file; forgetting it", metadata: ["digest": "\(digest)"])
            try? index.forgetBlob(key)
            return nil
        case .success(let file):
            guard file.size == record.size else {
                logger.error("cached blob has the wrong size; removing it", metadata: [
                    "digest": "\(digest)", "bytes": "\(file.size)", "expected": "\(record.size)",
                ])
                store.remove(digest)
                try? index.forgetBlob(key)
                return nil
            }
            // Access times are batched (`AccessRecorder`): hits stay read-only in SQLite.
            recorder.hit(key)
            return ServedBlob(digest: digest, size: record.size, mediaType: record.mediaType, body: .file(file), lease: lease)
        }
    }
}

extension Mirror {
    /// Hits and misses counted since the last flush to the index (`cove stats` adds them to the totals).
    public var pendingRequestCounts: (hits: Int64, misses: Int64) { recorder.pendingCounts }
}
