import CacheIndex
import Foundation
import OCI
import Upstream

/// A platform `cove preload --platform` selects: `os/architecture[/variant]`. Without a variant it matches every
/// variant of that architecture (`linux/arm64` matches `linux/arm64/v8`); with one, only that variant.
public struct PlatformFilter: Sendable, Equatable, Codable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    /// Parses `os/arch[/variant]`.
    /// - Throws: `PreloadError.badPlatform` for anything else.
    public init(parsing text: String) throws(PreloadError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && !$0.contains(where: \.isWhitespace) }) else {
            throw .badPlatform(text)
        }
        os = parts[0]
        architecture = parts[1]
        variant = parts.count == 3 ? parts[2] : nil
    }

    /// True when a descriptor's platform (`Descriptor.platform`, `os/arch[/variant]`) is this one.
    public func matches(_ platform: String?) -> Bool {
        guard let parts = platform?.split(separator: "/").map(String.init), parts.count >= 2 else { return false }
        return parts[0] == os && parts[1] == architecture && (variant == nil || (parts.count > 2 && parts[2] == variant))
    }

    public var description: String { "\(os)/\(architecture)" + (variant.map { "/" + $0 } ?? "") }
}

/// What to preload and how.
public struct PreloadOptions: Codable, Sendable, Equatable {
    /// Platforms to take from an index (`os/arch[/variant]`); empty: every child of the index, attestation
    /// manifests (`unknown/unknown`) included.
    public var platforms: [String]
    /// Also fetch and pin the referrers (signatures, SBOMs) of every manifest.
    public var withReferrers: Bool
    /// Blobs (and platform manifests) fetched at once, per image (1...64).
    public var parallelism: Int

    public init(platforms: [String] = [], withReferrers: Bool = false, parallelism: Int = 4) {
        self.platforms = platforms
        self.withReferrers = withReferrers
        self.parallelism = parallelism
    }
}

/// Why a preload could not start at all (per-image failures are in its status instead).
public enum PreloadError: Error, Sendable, CustomStringConvertible {
    case offline
    case badPlatform(String)
    case badParallelism(Int)
    case noImages

    public var description: String {
        switch self {
        case .offline: "this cache is offline (offline: true): preload has nothing to fetch from; run it where the upstream is reachable"
        case .badPlatform(let p): "platform \(RepositoryName.quoted(p)) is not os/arch[/variant] (e.g. linux/amd64, linux/arm/v7)"
        case .badParallelism(let n): "parallelism must be 1...64, not \(n)"
        case .noImages: "no images to preload"
        }
    }
}

/// Fetches images into the cache and pins them (`cove preload`): for each image, the manifest or index by tag or
/// digest, the selected platform manifests by digest, then every config and layer — all through `Mirror`, so
/// fills are the same single-flight fills clients get (one upstream fetch per blob, whoever asks; verified;
/// resumed with `Range` when a transfer breaks). Blobs already cached are skipped without a request.
///
/// An image is pinned once all of it is cached (never a half image); until then the eviction grace (recent
/// content is never evicted) and the fills' own leases protect what it committed. After pinning, the image is
/// checked again and anything evicted meanwhile fetched again. Images run one after another; within one,
/// `parallelism` blobs at a time.
public final class Preloader: Sendable {
    let mirror: Mirror
    let images: [String]
    let options: PreloadOptions
    let filters: [PlatformFilter]
    /// Live status, for rendering while `run` works.
    public let progress: PreloadProgress

    /// - Throws: `PreloadError` when the mirror is offline, a platform is malformed, or there is nothing to do.
    public init(mirror: Mirror, images: [String], options: PreloadOptions) throws(PreloadError) {
        guard !mirror.configuration.offline else { throw .offline }
        guard !images.isEmpty else { throw .noImages }
        guard (1...64).contains(options.parallelism) else { throw .badParallelism(options.parallelism) }
        var filters: [PlatformFilter] = []
        for p in options.platforms { filters.append(try PlatformFilter(parsing: p)) }
        self.mirror = mirror
        self.images = images
        self.options = options
        self.filters = filters
        progress = PreloadProgress(images: images)
    }

    /// Preloads every image (failures are recorded per image; the others go on).
    /// - Returns: the final status.
    public func run() async -> PreloadStatus {
        for (i, text) in images.enumerated() {
            if Task.isCancelled {
                progress.update(i) { $0.state = .failed; $0.error = "cancelled" }
                continue
            }
            await preload(i, text)
        }
        progress.finish()
        return progress.snapshot()
    }

    /// The objects of one image.
    struct Plan {
        /// Manifests in the order found (top first), each once.
        var manifests: [Digest] = []
        /// Referrer manifests (pinned by digest of their own).
        var referrers: [Digest] = []
        /// Configs and layers, each once, with their sizes (-1: unknown, schema 1).
        var blobs: [(Digest, Int64)] = []
        var seenBlobs: Set<Digest> = []
        var platforms: [String] = []

        mutating func addManifest(_ d: Digest) -> Bool {
            guard !manifests.contains(d) else { return false }
            manifests.append(d)
            return true
        }

        mutating func addBlob(_ d: Digest, _ size: Int64) {
            if seenBlobs.insert(d).inserted { blobs.append((d, size)) }
        }
    }

    /// A failure of one image, with every reason.
    struct ImageFailure: Error, CustomStringConvertible {
        var reasons: [String]
        var description: String { reasons.joined(separator: "\n") }
    }

    private func preload(_ i: Int, _ text: String) async {
        progress.update(i) { $0.state = .resolving }
        do {
            let ref = try ImageReference.parse(text, router: mirror.router)
            let registry = try mirror.router.registry(named: ref.registry)
            progress.update(i) { $0.resolved = ref.description }
            var plan = Plan()
            let top = try await mirror.manifest(registry, ref.repository, ref.reference)
            progress.update(i) { $0.digest = top.digest.description }
            try await collect(top, registry, ref.repository, depth: 0, into: &plan)
            if options.withReferrers {
                var subjects = plan.manifests[...]
                var depth = 0
                // Referrers of referrers too (a signature of an SBOM), two levels deep.
                while !subjects.isEmpty, depth < 2 {
                    let before = plan.manifests.count
                    for subject in subjects {
                        for r in try await referrers(of: subject, registry, ref.repository) where !plan.manifests.contains(r.digest) {
                            let m = try await mirror.manifest(registry, ref.repository, .digest(r.digest))
                            plan.referrers.append(m.digest)
                            try await collect(m, registry, ref.repository, depth: 1, into: &plan)
                        }
                    }
                    subjects = plan.manifests[before...]
                    depth += 1
                }
            }
            let known = plan.blobs.reduce(Int64(0)) { $0 + max(0, $1.1) }
            let (manifests, referrers, blobs, platforms) = (plan.manifests.count, plan.referrers.count, plan.blobs.count, plan.platforms)
            progress.update(i) { image in
                image.state = .fetching
                image.manifests = manifests
                image.referrers = referrers
                image.blobs = blobs
                image.bytes = known
                image.platforms = platforms
            }
            try await fetch(plan.blobs, registry, ref.repository, image: i)
            try await pinComplete(ref, top: top.digest, plan: plan, registry: registry, image: i)
            progress.update(i) { $0.state = .done }
        } catch {
            let message = (error as? ImageFailure)?.description ?? Self.describe(error)
            mirror.logger.warning("preload failed", metadata: ["image": "\(text)", "error": "\(message)"])
            progress.update(i) { $0.state = .failed; $0.error = message }
        }
    }

    /// Adds `manifest` to the plan: an index's selected children (fetched by digest), an image manifest's blobs.
    private func collect(_ manifest: ServedManifest, _ registry: RegistryClient, _ name: RepositoryName, depth: Int,
                         into plan: inout Plan) async throws {
        guard plan.addManifest(manifest.digest) else { return }
        let summary = try ManifestSummary(parsing: manifest.body)
        let isIndex = manifest.mediaType == MediaType.ociIndex || manifest.mediaType == MediaType.dockerManifestList
        guard isIndex || !summary.manifests.isEmpty else {
            for b in summary.blobs { plan.addBlob(b.digest, b.size) }
            return
        }
        guard depth < 4 else { throw ImageFailure(reasons: ["index \(manifest.digest) nests indexes more than 4 deep"]) }
        let chosen = filters.isEmpty ? summary.manifests : summary.manifests.filter { d in filters.contains { $0.matches(d.platform) } }
        if chosen.isEmpty, !summary.manifests.isEmpty {
            let offered = Set(summary.manifests.compactMap(\.platform)).sorted()
            throw ImageFailure(reasons: ["index \(manifest.digest) has no manifest for \(filters.map(\.description).joined(separator: ", ")) (it has \(offered.joined(separator: ", ")))"])
        }
        plan.platforms += chosen.compactMap(\.platform)
        // Child manifests are small: fetched `parallelism` at a time, then walked in order.
        let mirror = mirror, width = options.parallelism
        let fetched = try await withThrowingTaskGroup(of: ServedManifest.self, returning: [Digest: ServedManifest].self) { group in
            var out: [Digest: ServedManifest] = [:]
            var pending = chosen.map(\.digest)[...]
            for _ in 0..<width {
                guard let d = pending.popFirst() else { break }
                group.addTask { try await mirror.manifest(registry, name, .digest(d)) }
            }
            while let m = try await group.next() {
                out[m.digest] = m
                if let d = pending.popFirst() { group.addTask { try await mirror.manifest(registry, name, .digest(d)) } }
            }
            return out
        }
        for child in chosen {
            guard let m = fetched[child.digest] else { continue }
            try await collect(m, registry, name, depth: depth + 1, into: &plan)
        }
    }

    /// The referrers of `subject`: the OCI 1.1 referrers API, else (no API: 404) the fallback tag `sha256-<hex>`
    /// (an index of them, as cosign and oras push it to registries without the API). None is not an error.
    private func referrers(of subject: Digest, _ registry: RegistryClient, _ name: RepositoryName) async throws -> [Descriptor] {
        do {
            let served = try await mirror.referrers(registry, name, subject, query: "", artifactType: nil)
            return try ManifestSummary(parsing: served.body).manifests
        } catch {
            guard error.status == 404 else { throw error }
        }
        do {
            let tag = try Tag("\(subject.algorithm.rawValue)-\(subject.hex)")
            let index = try await mirror.manifest(registry, name, .tag(tag))
            return try ManifestSummary(parsing: index.body).manifests
        } catch {
            guard error.status == 404 else { throw error }
            return []
        }
    }

    /// Fetches the blobs not cached yet, `parallelism` at a time.
    /// - Throws: `ImageFailure` naming every blob that failed.
    private func fetch(_ blobs: [(Digest, Int64)], _ registry: RegistryClient, _ name: RepositoryName, image i: Int) async throws {
        let width = options.parallelism
        let failures = await withTaskGroup(of: String?.self, returning: [String].self) { group in
            var out: [String] = []
            var pending = blobs[...]
            for _ in 0..<width {
                guard let next = pending.popFirst() else { break }
                group.addTask { await self.fetchBlob(next.0, next.1, registry, name, image: i) }
            }
            while let result = await group.next() {
                if let result { out.append(result) }
                if let next = pending.popFirst() { group.addTask { await self.fetchBlob(next.0, next.1, registry, name, image: i) } }
            }
            return out
        }
        if !failures.isEmpty { throw ImageFailure(reasons: failures) }
    }

    /// Brings one blob into the cache: skipped when cached, else a fill (started here or joined) waited for to
    /// its commit. - Returns: nil, or why it failed.
    private func fetchBlob(_ digest: Digest, _ size: Int64, _ registry: RegistryClient, _ name: RepositoryName, image i: Int,
                           counting: Bool = true) async -> String? {
        if isCached(digest) {
            if counting { progress.update(i) { $0.blobsCached += 1; $0.bytesCached += max(0, size) } }
            return nil
        }
        do {
            let served = try await mirror.blob(registry, name, digest)
            defer { withExtendedLifetime(served.lease) {} }
            guard case .fill(let fill) = served.body else {
                // Committed meanwhile (another client's fill ended between the check and the request).
                if counting { progress.update(i) { $0.blobsCached += 1; $0.bytesCached += max(0, size) } }
                return nil
            }
            progress.begin(i, fill)
            defer { progress.end(fill) }
            // Returns once the digest verified (or throws the fill's error); the commit follows on the fill's task.
            _ = try await fill.waitForBytes(atLeast: .max)
            await mirror.fills.waitUntilSettled(digest)
            guard isCached(digest) else {
                return "blob \(digest): fetched and verified but not kept (cache budget or storage error; see the server log)"
            }
            progress.update(i) {
                if counting { $0.blobsFetched += 1 }
                $0.bytesFetched += served.size
                if size < 0 { $0.bytes += served.size }
            }
            return nil
        } catch {
            return "blob \(digest): \(Self.describe(error))"
        }
    }

    /// Pins the image once every object has its row, then checks again (an eviction between the check and the
    /// pin is fetched again, now protected). Referrer manifests get pins of their own, by digest.
    private func pinComplete(_ ref: ImageReference, top: Digest, plan: Plan, registry: RegistryClient, image i: Int) async throws {
        var pinned = false
        for round in 0..<3 {
            let missingManifests = plan.manifests.filter { (try? mirror.index.manifest($0.description)) == nil || !mirror.store.contains($0) }
            let missingBlobs = plan.blobs.filter { !isCached($0.0) }
            if missingManifests.isEmpty, missingBlobs.isEmpty {
                if pinned { return }
                try pin(ref, top: top, referrers: plan.referrers)
                pinned = true
                continue
            }
            guard round < 2 else { break }
            mirror.logger.notice("preload: content evicted before the pin; fetching it again", metadata: [
                "image": "\(ref)", "manifests": "\(missingManifests.count)", "blobs": "\(missingBlobs.count)",
            ])
            for d in missingManifests { _ = try await mirror.manifest(registry, ref.repository, .digest(d)) }
            var failures: [String] = []
            for (d, size) in missingBlobs {
                if let f = await fetchBlob(d, size, registry, ref.repository, image: i, counting: false) { failures.append(f) }
            }
            if !failures.isEmpty { throw ImageFailure(reasons: failures) }
        }
        if !pinned { throw ImageFailure(reasons: ["content of \(ref) was evicted while it was preloaded (cache.max_size too small?)"]) }
    }

    private func pin(_ ref: ImageReference, top: Digest, referrers: [Digest]) throws {
        _ = try mirror.pin(ref)
        if let tag = ref.tag {
            // `name:tag@digest`: record the tag too, so an offline cache answers `name:tag`. Checked long ago, so an
            // online cache revalidates it with the upstream on first use.
            try mirror.index.upsertTag(TagRecord(registry: ref.registry, repository: ref.repository.value, tag: tag.value,
                                                 digest: top.description, fetchedAt: Date(), checkedAt: .distantPast))
        }
        for r in referrers {
            _ = try mirror.pin(ImageReference(registry: ref.registry, repository: ref.repository, reference: .digest(r)))
        }
    }

    /// True when `digest` has its index row and its file.
    private func isCached(_ digest: Digest) -> Bool {
        ((try? mirror.index.blob(digest.description)) ?? nil) != nil && mirror.store.contains(digest)
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? DistributionError { return "\(e.code.rawValue) (\(e.status)): \(e.message)" }
        return "\(error)"
    }
}
