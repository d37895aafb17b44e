import BlobStore
import CacheIndex
import Foundation
import Mirror
import OCI
import OCIBundle
#if canImport(Glibc)
import Glibc
#endif

/// `cove export`: cached images as an OCI image layout in a tar archive (`OCIBundle`), read from the index and the
/// blob files only (never from an upstream), streamed to a descriptor.
///
/// Reading needs no storage lock: committed files never change, and an open descriptor keeps a file's bytes even
/// if eviction unlinks it meanwhile. Content evicted between planning and copying fails the export naming it
/// (pinned content, e.g. preloaded or imported, is never evicted).
public enum BundleExport {
    /// One image to export, as the operator named it, resolved.
    public struct Image: Sendable {
        public var reference: ImageReference
        public init(_ reference: ImageReference) { self.reference = reference }
    }

    /// What will be written: `index.json`'s descriptors and every object, each once.
    public struct Plan: Sendable {
        /// `index.json`'s descriptors, in the order the images were named.
        public var descriptors: [LayoutDescriptor]
        /// Every manifest and blob to copy, in first-use order, without duplicates: digest and size in bytes.
        public var objects: [(digest: Digest, size: Int64)]
        /// Children of indexes left out (`--platform`), as `image: digest (platform)`.
        public var skippedChildren: [String]
        /// Total bytes of the objects.
        public var bytes: Int64 { objects.reduce(0) { $0 + $1.size } }
    }

    /// What an export wrote.
    public struct Totals: Sendable, Equatable {
        public var images: Int
        /// Objects (manifests and blobs) in the archive.
        public var blobs: Int
        /// Bytes of the archive (headers and padding included).
        public var bytes: Int64
        public var seconds: Double

        /// `exported 3 images, 12 blobs, 5.1 MiB (5347328 bytes) in 0.4 s`.
        public var text: String {
            "exported \(images) images, \(blobs) blobs, \(ByteFormat.human(bytes)) (\(bytes) bytes) in \(String(format: "%.1f", seconds)) s"
                + (seconds > 0 ? ", \(ByteFormat.human(Int64(Double(bytes) / seconds)))/s" : "")
        }
    }

    /// Every tagged image whose manifest is cached, sorted by registry, repository, tag (what `cove export`
    /// without IMAGE exports).
    /// - Throws: GRDB's `DatabaseError`; `DistributionError` for a row that is not a valid name.
    public static func allTaggedImages(index: CacheIndex) throws -> [ImageReference] {
        let catalog = try index.catalog()
        let manifests = Set(catalog.manifests.map(\.digest))
        return try catalog.tags.filter { manifests.contains($0.digest) }
            .sorted { ($0.registry, $0.repository, $0.tag) < ($1.registry, $1.repository, $1.tag) }
            .map { ImageReference(registry: $0.registry, repository: try RepositoryName($0.repository), reference: .tag(try Tag($0.tag))) }
    }

    /// Resolves the images against the index and collects what to write.
    /// - Parameters:
    ///   - platforms: `os/arch[/variant]` to keep of every index (an entry without a variant matches every
    ///     variant); empty: every child. The index's own bytes are always kept as they are.
    ///   - root: the storage root (blob files are checked there).
    /// - Throws: `BundleError` naming the image or digest that is not cached (an export is complete or fails),
    ///   a cached manifest that fails its digest, or a platform an index lacks.
    public static func plan(_ images: [ImageReference], platforms: [String], index: CacheIndex, root: URL) throws -> Plan {
        var plan = Plan(descriptors: [], objects: [], skippedChildren: [])
        var seen = Set<Digest>()
        for image in images {
            let digest: Digest
            switch image.reference {
            case .digest(let d): digest = d
            case .tag(let t):
                guard let row = try index.tag(registry: image.registry, repository: image.repository.value, tag: t.value),
                      let d = try? Digest(row.digest) else {
                    throw BundleError("\(image) is not cached (no such tag in the cache; pull or preload it first)")
                }
                digest = d
            }
            guard let (record, blob) = try index.manifest(digest.description) else {
                throw BundleError("\(image): manifest \(digest) is not cached (pull or preload it first)")
            }
            var annotations = [ImageLayout.coveRefAnnotation: image.description]
            if case .tag(let t) = image.reference { annotations[ImageLayout.refNameAnnotation] = t.value }
            plan.descriptors.append(LayoutDescriptor(mediaType: record.mediaType, digest: digest.description, size: blob.size, annotations: annotations))
            try collect(manifest: digest, mediaType: record.mediaType, image: image, platforms: platforms, index: index, root: root,
                        plan: &plan, seen: &seen, top: true)
        }
        return plan
    }

    private static func collect(manifest digest: Digest, mediaType: String, image: ImageReference, platforms: [String], index: CacheIndex,
                                root: URL, plan: inout Plan, seen: inout Set<Digest>, top: Bool) throws {
        guard seen.insert(digest).inserted else { return }
        let bytes = try readManifest(digest, mediaType: mediaType, image: image, root: root)
        plan.objects.append((digest, Int64(bytes.count)))
        let summary: ManifestSummary
        do { summary = try ManifestSummary(parsing: bytes) } catch {
            throw BundleError("\(image): cached manifest \(digest) does not parse: \(error.message)")
        }
        for child in summary.manifests {
            if !platforms.isEmpty, !platforms.contains(where: { matches(child.platform, $0) }) {
                plan.skippedChildren.append("\(image): \(child.digest) (\(child.platform ?? "no platform"))")
                continue
            }
            guard let (record, _) = try index.manifest(child.digest.description) else {
                throw BundleError("\(image): platform manifest \(child.digest) (\(child.platform ?? "no platform")) is not cached; "
                                  + "pull or preload it, or export a subset with --platform")
            }
            try collect(manifest: child.digest, mediaType: record.mediaType, image: image, platforms: platforms, index: index, root: root,
                        plan: &plan, seen: &seen, top: false)
        }
        if !summary.manifests.isEmpty, !platforms.isEmpty, !summary.manifests.contains(where: { c in platforms.contains { matches(c.platform, $0) } }) {
            throw BundleError("\(image): the index has none of the platforms \(platforms.joined(separator: ", ")) "
                              + "(it has \(summary.manifests.compactMap(\.platform).joined(separator: ", ")))")
        }
        for blob in summary.blobs where seen.insert(blob.digest).inserted {
            guard let row = try index.blob(blob.digest.description) else {
                throw BundleError("\(image): blob \(blob.digest) of manifest \(digest) is not cached (evicted or never pulled); pull or preload the image first")
            }
            var st = stat()
            guard stat(BlobStore.path(for: blob.digest, root: root), &st) == 0, Int64(st.st_size) == row.size else {
                throw BundleError("\(image): blob \(blob.digest) has an index row but no complete file (run cove verify --repair, then pull it again)")
            }
            if blob.size >= 0, blob.size != row.size {
                throw BundleError("\(image): blob \(blob.digest) is \(row.size) bytes in the cache but manifest \(digest) says \(blob.size)")
            }
            plan.objects.append((blob.digest, row.size))
        }
    }

    /// A cached manifest's bytes, checked against its digest.
    static func readManifest(_ digest: Digest, mediaType: String, image: ImageReference, root: URL) throws -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: BlobStore.path(for: digest, root: root)) else {
            throw BundleError("\(image): manifest \(digest) has an index row but no file (run cove verify --repair, then pull it again)")
        }
        let bytes = [UInt8](data)
        guard ManifestDigest.of(bytes, mediaType: mediaType, algorithm: digest.algorithm) == digest else {
            throw BundleError("\(image): cached manifest \(digest) does not match its digest (run cove verify --repair)")
        }
        return bytes
    }

    /// True when a child's `os/arch[/variant]` is what `wanted` asks for (no variant in `wanted`: any variant).
    static func matches(_ platform: String?, _ wanted: String) -> Bool {
        guard let platform else { return false }
        if platform == wanted { return true }
        return wanted.split(separator: "/").count == 2 && platform.hasPrefix(wanted + "/")
    }

    /// Writes `plan` as a tar archive to `fd`: `oci-layout`, `index.json`, the `blobs/` directories, then every
    /// object in plan order, copied from its file in chunks.
    /// - Throws: `BundleError` naming an object whose file vanished or changed size, or a write error.
    public static func write(_ plan: Plan, root: URL, to fd: Int32, started: ContinuousClock.Instant = .now) throws -> Totals {
        let tar = TarWriter(fd: fd)
        do {
            try tar.addFile(ImageLayout.markerFile, bytes: ImageLayout.markerBytes)
            try tar.addFile(ImageLayout.indexFile, bytes: try LayoutIndex(manifests: plan.descriptors).encoded())
            try tar.addDirectory(ImageLayout.blobsDirectory)
            for algorithm in Digest.Algorithm.allCases where plan.objects.contains(where: { $0.digest.algorithm == algorithm }) {
                try tar.addDirectory("\(ImageLayout.blobsDirectory)/\(algorithm.rawValue)")
            }
            for (digest, size) in plan.objects {
                let source = open(BlobStore.path(for: digest, root: root), O_RDONLY | O_CLOEXEC)
                guard source >= 0 else { throw BundleError("\(digest) is no longer cached (evicted during the export?): \(String(cString: strerror(errno)))") }
                defer { close(source) }
                var st = stat()
                guard fstat(source, &st) == 0, Int64(st.st_size) == size else { throw BundleError("the cached file of \(digest) changed size during the export") }
                try tar.addFile(ImageLayout.blobPath(digest), size: size, from: source)
            }
            try tar.finish()
        } catch let e as TarError {
            throw BundleError("cannot write the bundle: \(e)")
        }
        let elapsed = ContinuousClock.now - started
        return Totals(images: plan.descriptors.count, blobs: plan.objects.count, bytes: tar.bytesWritten,
                      seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
