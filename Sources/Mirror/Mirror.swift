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

    /// Opens the cache under `storage` (creating `index.sqlite`, `blobs/`, `tmp/`).
    /// - Throws: `BlobStoreError` or a database error when the storage cannot be opened.
    public init(storage: URL, router: UpstreamRouter, configuration: MirrorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.store = try BlobStore(root: storage)
        self.index = try CacheIndex(path: storage.appendingPathComponent("index.sqlite").path)
        self.router = router
        self.logger = logger
        self.fills = BlobFills(store: store, index: index, configuration: configuration, logger: logger)
    }

    /// Releases the storage directory (its lock) for another process; the mirror must not serve afterwards.
    public func close() { store.close() }

    /// Waits until no fill is in flight, at most `seconds`: on shutdown, so verified downloads are committed
    /// to the store rather than thrown away.
    /// - Returns: the number of fills still running when it gave up.
    public func drainFills(within seconds: Double) async -> Int {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            let n = await fills.activeCount
            if n == 0 { return 0 }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return await fills.activeCount
    }

    /// Blob fills that ended without a verified blob (upstream errors, verification failures), since start.
    public var failedFills: Int { fills.failures.load(ordering: .relaxed) }

    // MARK: - Manifests

    /// The manifest for `name` at `reference` (OCI distribution spec, "Pulling manifests").
    /// - Throws: `DistributionError`: `MANIFEST_UNKNOWN` (404) when neither cache nor upstream has it,
    ///   `DENIED`, `TOOMANYREQUESTS` or `UNAVAILABLE` (503) for upstream failures, `UNAVAILABLE` (502) when
    ///   every endpoint's bytes failed to match their digest.
    public func manifest(_ registry: RegistryClient, _ name: RepositoryName, _ reference: Reference) async throws(DistributionError) -> ServedManifest {
        let upstreamName = registry.upstreamName(for: name)
        switch reference {
        case .digest(let digest):
            if let cached = try cachedManifest(digest) { return cached }
            try requireOnline("manifest \(name)@\(digest)", code: .manifestUnknown)
            return try await flight("\(registry.name)/\(upstreamName)@\(digest)") { [self] () throws(DistributionError) in
                if let cached = try cachedManifest(digest) { return cached }
                return try await fetchManifest(registry, upstreamName, reference, expected: digest)
            }
        case .tag(let tag):
            if let record = try? index.tag(registry: registry.name, repository: upstreamName.value, tag: tag.value),
               let digest = try? Digest(record.digest), let cached = try cachedManifest(digest),
               configuration.offline || Date().timeIntervalSince(record.checkedAt) < configuration.tagTTL {
                return cached
            }
            try requireOnline("manifest \(name):\(tag)", code: .manifestUnknown)
            return try await flight("\(registry.name)/\(upstreamName):\(tag)") { [self] () throws(DistributionError) in
                try await resolveTag(registry, upstreamName, tag)
            }
        }
    }

    /// In offline mode a miss is final: 404 without contacting any upstream.
    private func requireOnline(_ subject: String, code: DistributionErrorCode) throws(DistributionError) {
        if configuration.offline { throw DistributionError(code, "\(subject) is not cached and this mirror is offline") }
    }

    private func flight(_ key: String, _ op: @escaping @Sendable () async throws(DistributionError) -> ServedManifest) async throws(DistributionError) -> ServedManifest {
        do {
            return try await manifestFlights.run(key) { try await op() }
        } catch let e as DistributionError {
            throw e
        } catch {
            throw DistributionError(.unknown, "\(error)")
        }
    }

    /// Revalidates (or first resolves) a tag: HEAD upstream, GET only when the digest is new.
    private func resolveTag(_ registry: RegistryClient, _ name: RepositoryName, _ tag: Tag) async throws(DistributionError) -> ServedManifest {
        let record = try? index.tag(registry: registry.name, repository: name.value, tag: tag.value)
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
            // Verified per endpoint: bytes that do not match the requested (or announced) digest send the
            // request on to the next endpoint instead of failing it.
            response = try await registry.manifest(name, reference, method: "GET", deadline: deadline) { response in
                let (digest, check) = Self.manifestDigest(response, expected: expected)
                guard let check, check != digest else { return nil }
                return "manifest bytes hash to \(digest), not \(check)"
            }
        } catch {
            throw .from(error, notFound: .manifestUnknown, subject: "manifest \(name):\(reference)")
        }
        let body = response.body
        let digest = Self.manifestDigest(response, expected: expected).actual
        let summary = try? ManifestSummary(parsing: body)
        let mediaType = summary?.servedMediaType(upstreamContentType: response.head["Content-Type"])
            ?? response.head["Content-Type"] ?? MediaType.ociManifest
        do {
            if !store.contains(digest) { try store.put(body, as: digest) }
            let children = (summary?.manifests ?? []).map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "manifest", size: $0.size, platform: $0.platform)
            } + (summary?.blobs ?? []).map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "blob", size: $0.size, platform: nil)
            }
            try index.insertManifest(ManifestRecord(digest: digest.description, mediaType: mediaType, registry: registry.name, repository: name.value),
                                     size: Int64(body.count), children: children)
            if case .tag(let tag) = reference {
                let now = Date()
                try index.upsertTag(TagRecord(registry: registry.name, repository: name.value, tag: tag.value, digest: digest.description, fetchedAt: now, checkedAt: now))
            }
        } catch {
            // Serving still works from memory; the next request will try to store again.
            logger.error("could not store manifest", metadata: ["digest": "\(digest)", "error": "\(error)"])
        }
        return ServedManifest(digest: digest, mediaType: mediaType, body: body, stale: false)
    }

    /// The digest of a manifest response's bytes, and the digest they must have (the requested one, else the
    /// upstream's `Docker-Content-Digest`), in the same algorithm.
    static func manifestDigest(_ response: UpstreamResponse, expected: Digest?) -> (actual: Digest, check: Digest?) {
        let announced = response.head["Docker-Content-Digest"].flatMap { try? Digest($0) }
        let check = expected ?? announced
        var hasher = DigestHasher(check?.algorithm ?? .sha256)
        hasher.update(response.body)
        return (hasher.finalize(), check)
    }

    /// A manifest from the cache, or nil. Manifests are small, so their bytes are re-verified on every read:
    /// a file that vanished, shrank or was altered is removed and forgotten (and re-fetched when online).
    /// - Throws: `UNAVAILABLE` (503) when the file is there but cannot be read now (e.g. out of descriptors):
    ///   the content is kept.
    private func cachedManifest(_ digest: Digest) throws(DistributionError) -> ServedManifest? {
        guard let (record, blobRecord) = try? index.manifest(digest.description) else { return nil }
        switch store.read(digest) {
        case .failure(.missing):
            logger.warning("index row without a file; forgetting it", metadata: ["digest": "\(digest)"])
            try? index.forgetBlob(digest.description)
            return nil
        case .failure(.io(let why)):
            throw DistributionError(.unavailable, "cannot read cached manifest \(digest): \(why)")
        case .success(let body):
            var hasher = DigestHasher(digest.algorithm)
            hasher.update(body)
            guard hasher.finalize() == digest else {
                logger.error("cached manifest is corrupt; removing it", metadata: ["digest": "\(digest)", "bytes": "\(body.count)"])
                store.remove(digest)
                try? index.forgetBlob(digest.description)
                return nil
            }
            touch(blobRecord)
            return ServedManifest(digest: digest, mediaType: record.mediaType, body: body, stale: false)
        }
    }

    // MARK: - Blobs

    /// The blob `digest`, served from the cache or from a (possibly shared) fill.
    /// - Throws: `BLOB_UNKNOWN` (404) when the upstream lacks it; `DENIED`, `TOOMANYREQUESTS`, `UNAVAILABLE`
    ///   for upstream failures; `SIZE_INVALID` when it exceeds the configured maximum size; `UNAVAILABLE`
    ///   when the fill fails before its size is known.
    public func blob(_ registry: RegistryClient, _ name: RepositoryName, _ digest: Digest) async throws(DistributionError) -> ServedBlob {
        if let hit = try cachedBlob(digest) { return hit }
        if configuration.offline, await fills.inFlight(digest) == nil {
            throw DistributionError(.blobUnknown, "blob \(digest) is not cached and this mirror is offline")
        }
        let fill: BlobFill
        do {
            guard let f = try await fills.attach(registry, name, digest) else {
                if let hit = try cachedBlob(digest) { return hit }
                throw DistributionError(.unavailable, "blob \(digest) vanished while being served")
            }
            fill = f
        } catch let e as DistributionError {
            throw e
        } catch {
            throw DistributionError(.unknown, "cannot start fill: \(error)")
        }
        do {
            let size = try await fill.waitForSize()
            return ServedBlob(digest: digest, size: size, mediaType: MediaType.octetStream, body: .fill(fill))
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
        if let hit = try cachedBlob(digest) { return (hit.size, hit.mediaType) }
        if let fill = await fills.inFlight(digest), let size = try? await fill.waitForSize() {
            return (size, MediaType.octetStream)
        }
        try requireOnline("blob \(digest)", code: .blobUnknown)
        do {
            let head = try await registry.blobHead(registry.upstreamName(for: name), digest)
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
        guard let record = try? index.blob(digest.description) else { return nil }
        switch store.open(digest) {
        case .failure(.io(let why)):
            throw DistributionError(.unavailable, "cannot open cached blob \(digest): \(why)")
        case .failure(.missing):
            logger.warning("index row without a file; forgetting it", metadata: ["digest": "\(digest)"])
            try? index.forgetBlob(digest.description)
            return nil
        case .success(let file):
            guard file.size == record.size else {
                logger.error("cached blob has the wrong size; removing it", metadata: [
                    "digest": "\(digest)", "bytes": "\(file.size)", "expected": "\(record.size)",
                ])
                store.remove(digest)
                try? index.forgetBlob(digest.description)
                return nil
            }
            touch(record)
            return ServedBlob(digest: digest, size: record.size, mediaType: record.mediaType, body: .file(file))
        }
    }

    /// Records the access for eviction, at most once a minute per row: hits stay read-only in SQLite.
    private func touch(_ record: BlobRecord) {
        let now = Date()
        guard now.timeIntervalSince(record.lastAccessAt) >= 60 else { return }
        try? index.touch(record.digest, now: now)
    }

    // MARK: - Tags

    /// `GET /v2/<name>/tags/list` passed through to the upstream with its `n`/`last` query; the `Link` header
    /// is rewritten to this mirror's name for the repository (OCI distribution spec, "Listing Tags").
    /// - Returns: body bytes and the `Link` header value, if any.
    /// - Throws: `NAME_UNKNOWN` (404) and the upstream mappings of `manifest(_:_:)`.
    public func tags(_ registry: RegistryClient, _ name: RepositoryName, query: String) async throws(DistributionError) -> (body: [UInt8], link: String?) {
        let upstreamName = registry.upstreamName(for: name)
        if configuration.offline { return try cachedTags(registry, name, upstreamName, query: query) }
        do {
            let response = try await registry.tags(upstreamName, query: query)
            let link = response.head["Link"].map {
                $0.replacingOccurrences(of: "/v2/\(upstreamName.value)/", with: "/v2/\(name.value)/")
            }
            return (response.body, link)
        } catch {
            throw .from(error, notFound: .nameUnknown, subject: "repository \(name)")
        }
    }

    /// The tags the cache knows for a repository, paginated with `n` and `last` like the spec's tag listing.
    private func cachedTags(_ registry: RegistryClient, _ name: RepositoryName, _ upstreamName: RepositoryName, query: String) throws(DistributionError) -> (body: [UInt8], link: String?) {
        var n: Int?, last: String?
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "n" { n = Int(kv[1]) }
            if kv[0] == "last" { last = kv[1].removingPercentEncoding }
        }
        var tags = ((try? index.tags(registry: registry.name, repository: upstreamName.value)) ?? []).sorted()
        guard !tags.isEmpty else { throw DistributionError(.nameUnknown, "repository \(name) is not cached and this mirror is offline") }
        if let last { tags = tags.filter { $0 > last } }
        var link: String?
        if let n, n >= 0, tags.count > n {
            tags = Array(tags.prefix(n))
            link = "</v2/\(name)/tags/list?n=\(n)&last=\(tags.last ?? "")>; rel=\"next\""
        }
        let list = tags.map { DistributionError.jsonString($0) }.joined(separator: ",")
        return (Array(#"{"name":\#(DistributionError.jsonString(name.value)),"tags":[\#(list)]}"#.utf8), link)
    }
}
