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
/// Rules (DESIGN.md "Protocol rules that bite"): digest-addressed content is served from cache without
/// contacting the upstream; a cached tag is trusted for `tagTTL` seconds, then revalidated with an upstream
/// HEAD and re-fetched only if its digest changed; when revalidation fails the cached manifest is served
/// (stale-if-error). Everything stored is verified against its digest first.
public final class Mirror: Sendable {
    public let configuration: MirrorConfiguration
    public let store: BlobStore
    public let index: CacheIndex
    public let upstream: UpstreamClient
    let logger: Logger
    let fills: BlobFills
    let manifestFlights = SingleFlight<String, ServedManifest>()

    /// Opens the cache under `storage` (creating `index.sqlite`, `blobs/`, `tmp/`).
    /// - Throws: `BlobStoreError` or a database error when the storage cannot be opened.
    public init(storage: URL, upstream: UpstreamClient, configuration: MirrorConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.store = try BlobStore(root: storage)
        self.index = try CacheIndex(path: storage.appendingPathComponent("index.sqlite").path)
        self.upstream = upstream
        self.logger = logger
        self.fills = BlobFills(store: store, index: index, upstream: upstream, configuration: configuration, logger: logger)
    }

    /// Upstream blob GETs started so far (resumes included).
    public var upstreamBlobFetches: Int { fills.upstreamFetches.load(ordering: .relaxed) }

    private var registry: String { upstream.configuration.registryKey }

    // MARK: - Manifests

    /// The manifest for `name` at `reference` (OCI distribution spec, "Pulling manifests").
    /// - Throws: `DistributionError`: `MANIFEST_UNKNOWN` (404) when neither cache nor upstream has it,
    ///   `DENIED`, `TOOMANYREQUESTS` or `UNAVAILABLE` for upstream failures, `MANIFEST_INVALID` when the
    ///   upstream's bytes do not match their digest.
    public func manifest(_ name: RepositoryName, _ reference: Reference) async throws(DistributionError) -> ServedManifest {
        let upstreamName = upstream.upstreamName(for: name)
        switch reference {
        case .digest(let digest):
            if let cached = cachedManifest(digest) { return cached }
            return try await flight("\(registry)/\(upstreamName)@\(digest)") { [self] () throws(DistributionError) in
                if let cached = cachedManifest(digest) { return cached }
                return try await fetchManifest(upstreamName, reference, expected: digest)
            }
        case .tag(let tag):
            if let record = try? index.tag(registry: registry, repository: upstreamName.value, tag: tag.value),
               let digest = try? Digest(record.digest), let cached = cachedManifest(digest),
               Date().timeIntervalSince(record.checkedAt) < configuration.tagTTL {
                return cached
            }
            return try await flight("\(registry)/\(upstreamName):\(tag)") { [self] () throws(DistributionError) in
                try await resolveTag(upstreamName, tag)
            }
        }
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
    private func resolveTag(_ name: RepositoryName, _ tag: Tag) async throws(DistributionError) -> ServedManifest {
        let record = try? index.tag(registry: registry, repository: name.value, tag: tag.value)
        let cached = record.flatMap { try? Digest($0.digest) }.flatMap { cachedManifest($0) }
        guard let cached else { return try await fetchManifest(name, .tag(tag), expected: nil) }
        if Date().timeIntervalSince(record!.checkedAt) < configuration.tagTTL { return cached }
        do {
            let head = try await upstream.manifest(name, .tag(tag), method: "HEAD").head
            if let d = head["Docker-Content-Digest"], d == cached.digest.description {
                try? index.markTagChecked(registry: registry, repository: name.value, tag: tag.value)
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
            return try await fetchManifest(name, .tag(tag), expected: nil)
        } catch where error.code == .unavailable || error.code == .tooManyRequests {
            var stale = cached
            stale.stale = true
            return stale
        }
    }

    /// GETs a manifest, verifies it, stores it byte-exact and records the tag if fetched by tag.
    private func fetchManifest(_ name: RepositoryName, _ reference: Reference, expected: Digest?) async throws(DistributionError) -> ServedManifest {
        let response: UpstreamResponse
        do {
            response = try await upstream.manifest(name, reference, method: "GET")
        } catch {
            throw .from(error, notFound: .manifestUnknown, subject: "manifest \(name):\(reference)")
        }
        let body = response.body
        let announced = response.head["Docker-Content-Digest"].flatMap { try? Digest($0) }
        let algorithm = expected?.algorithm ?? announced?.algorithm ?? .sha256
        var hasher = DigestHasher(algorithm)
        hasher.update(body)
        let digest = hasher.finalize()
        if let check = expected ?? announced, check != digest {
            logger.error("upstream manifest failed verification", metadata: ["repository": "\(name)", "expected": "\(check)", "actual": "\(digest)"])
            throw DistributionError(.manifestInvalid, "upstream sent manifest bytes that do not match digest \(check)", status: 502)
        }
        let summary = try? ManifestSummary(parsing: body)
        let mediaType = summary?.servedMediaType(upstreamContentType: response.head["Content-Type"])
            ?? response.head["Content-Type"] ?? MediaType.ociManifest
        do {
            if store.open(digest) == nil { try store.put(body, as: digest) }
            let children = (summary?.manifests ?? []).map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "manifest", size: $0.size, platform: $0.platform)
            } + (summary?.blobs ?? []).map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "blob", size: $0.size, platform: nil)
            }
            try index.insertManifest(ManifestRecord(digest: digest.description, mediaType: mediaType, registry: registry, repository: name.value),
                                     size: Int64(body.count), children: children)
            if case .tag(let tag) = reference {
                let now = Date()
                try index.upsertTag(TagRecord(registry: registry, repository: name.value, tag: tag.value, digest: digest.description, fetchedAt: now, checkedAt: now))
            }
        } catch {
            // Serving still works from memory; the next request will try to store again.
            logger.error("could not store manifest", metadata: ["digest": "\(digest)", "error": "\(error)"])
        }
        return ServedManifest(digest: digest, mediaType: mediaType, body: body, stale: false)
    }

    /// A manifest from the cache, or nil. A row whose file vanished is forgotten.
    private func cachedManifest(_ digest: Digest) -> ServedManifest? {
        guard let (record, _) = try? index.manifest(digest.description) else { return nil }
        guard let body = store.read(digest) else {
            try? index.forgetBlob(digest.description)
            return nil
        }
        touch(digest)
        return ServedManifest(digest: digest, mediaType: record.mediaType, body: body, stale: false)
    }

    // MARK: - Blobs

    /// The blob `digest`, served from the cache or from a (possibly shared) fill.
    /// - Throws: `BLOB_UNKNOWN` (404) when the upstream lacks it; `DENIED`, `TOOMANYREQUESTS`, `UNAVAILABLE`
    ///   for upstream failures; `SIZE_INVALID` when it exceeds the configured maximum size; `UNAVAILABLE`
    ///   when the fill fails before its size is known.
    public func blob(_ name: RepositoryName, _ digest: Digest) async throws(DistributionError) -> ServedBlob {
        if let hit = cachedBlob(digest) { return hit }
        let fill: BlobFill
        do {
            guard let f = try await fills.attach(name, digest) else {
                if let hit = cachedBlob(digest) { return hit }
                throw DistributionError(.unknown, "blob \(digest) vanished while being served")
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
        } catch {
            throw try await blobFailure(name, digest, fill)
        }
    }

    /// Size and media type of a blob for HEAD: from the cache, a fill in flight, or an upstream HEAD (which
    /// does not start a fill).
    /// - Throws: as `blob(_:_:)`.
    public func blobHead(_ name: RepositoryName, _ digest: Digest) async throws(DistributionError) -> (size: Int64, mediaType: String) {
        if let record = try? index.blob(digest.description), store.open(digest) != nil {
            return (record.size, record.mediaType)
        }
        if let fill = await fills.inFlight(digest), let size = try? await fill.waitForSize() {
            return (size, MediaType.octetStream)
        }
        do {
            let head = try await upstream.blobHead(upstream.upstreamName(for: name), digest)
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

    /// Why a fill failed, as a client error: re-asks the upstream with a HEAD so a missing blob is a 404.
    private func blobFailure(_ name: RepositoryName, _ digest: Digest, _ fill: BlobFill) async throws(DistributionError) -> DistributionError {
        let reason: String = if case .failed(let m) = fill.phase { m } else { "fill failed" }
        if reason.contains("upstream answered 404") {
            return DistributionError(.blobUnknown, "blob \(digest) not found upstream")
        }
        if reason.contains("upstream answered 401") || reason.contains("upstream answered 403") {
            return DistributionError(.denied, "upstream denied access to blob \(digest) (are credentials for this upstream configured?)", status: 403)
        }
        if reason.contains("upstream answered 429") {
            return DistributionError(.tooManyRequests, "upstream rate limit reached fetching blob \(digest)")
        }
        if reason.contains("larger than the limit") {
            return DistributionError(.sizeInvalid, "blob \(digest) exceeds this mirror's size limit")
        }
        return DistributionError(.unavailable, "blob \(digest) could not be fetched: \(reason)")
    }

    private func cachedBlob(_ digest: Digest) -> ServedBlob? {
        guard let record = try? index.blob(digest.description) else { return nil }
        guard let file = store.open(digest), file.size == record.size else {
            logger.warning("index row without a matching file; refetching", metadata: ["digest": "\(digest)"])
            try? index.forgetBlob(digest.description)
            return nil
        }
        touch(digest)
        return ServedBlob(digest: digest, size: record.size, mediaType: record.mediaType, body: .file(file))
    }

    private func touch(_ digest: Digest) {
        try? index.touch(digest.description)
    }

    // MARK: - Tags

    /// `GET /v2/<name>/tags/list` passed through to the upstream with its `n`/`last` query; the `Link` header
    /// is rewritten to this mirror's name for the repository (OCI distribution spec, "Listing Tags").
    /// - Returns: body bytes and the `Link` header value, if any.
    /// - Throws: `NAME_UNKNOWN` (404) and the upstream mappings of `manifest(_:_:)`.
    public func tags(_ name: RepositoryName, query: String) async throws(DistributionError) -> (body: [UInt8], link: String?) {
        let upstreamName = upstream.upstreamName(for: name)
        do {
            let response = try await upstream.tags(upstreamName, query: query)
            let link = response.head["Link"].map {
                $0.replacingOccurrences(of: "/v2/\(upstreamName.value)/", with: "/v2/\(name.value)/")
            }
            return (response.body, link)
        } catch {
            throw .from(error, notFound: .nameUnknown, subject: "repository \(name)")
        }
    }
}
