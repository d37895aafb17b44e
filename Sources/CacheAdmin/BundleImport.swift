import BlobStore
import CacheIndex
import Foundation
import Mirror
import OCI
import OCIBundle
#if canImport(Glibc)
import Glibc
#endif

/// `cove import`: an OCI image layout — a tar archive (Cove's bundles, `skopeo copy … oci-archive:FILE`) or a
/// directory (`skopeo copy … oci:DIR`) — verified and registered in the cache, pinned.
///
/// Atomicity: every blob is hashed while it is copied into `<storage>/tmp/import-<id>-…` (fsynced; files already
/// cached are only hashed); then every `index.json` image is checked: manifests by `ManifestSummary.validating`
/// and `ManifestDigest`, sizes against the descriptors that name them, config and layers present. Only then are the
/// staged files renamed into `blobs/` and all rows (blobs, manifests, tags, pins) written in one transaction. Any
/// failure before removes the staged files: nothing of a bad bundle becomes visible. (A crash between rename and
/// transaction leaves files without rows, which start-up reconciliation removes.)
public enum BundleImport {
    /// How a bundle's images are named in the cache.
    public struct Naming: Sendable {
        /// `--as`: a repository (routed like `serve`), optionally with `:tag`, for images without Cove's
        /// `io.cove.image.ref` annotation.
        public var target: String?
        public init(target: String?) { self.target = target }
    }

    /// Largest `index.json` or manifest read into memory (bytes).
    static let maxDocumentSize: Int64 = 16 << 20

    /// Imports the bundle at `path` into `cache`.
    /// - Throws: `BundleError` naming the bad entry (tar member, digest) or the image that cannot be named; then
    ///   the cache is unchanged.
    public static func run(path: String, naming: Naming, cache: CacheAdmin) throws -> ImportReport {
        let started = ContinuousClock.now
        let mirror = try cache.requireMirror(ImportCommand.name)
        let staging = Staging(store: cache.store, index: cache.index)
        defer { staging.removeAll() }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw BundleError("\(path): no such file or directory") }
        if isDir.boolValue { try staging.readDirectory(path) } else { try staging.readTar(path) }
        guard let marker = staging.marker else { throw BundleError("\(path) is not an OCI image layout: it has no \(ImageLayout.markerFile)") }
        guard let version = (try? JSONSerialization.jsonObject(with: Data(marker)) as? [String: Any])?["imageLayoutVersion"] as? String,
              version.hasPrefix("1.") else {
            throw BundleError("\(ImageLayout.markerFile): not an image layout version 1.x marker")
        }
        guard let indexBytes = staging.indexJSON else { throw BundleError("\(path) is not an OCI image layout: it has no \(ImageLayout.indexFile)") }
        let layoutIndex: LayoutIndex
        do { layoutIndex = try LayoutIndex.decode(indexBytes) } catch { throw BundleError("\(ImageLayout.indexFile): not an image index: \(error)") }
        guard !layoutIndex.manifests.isEmpty else { throw BundleError("\(ImageLayout.indexFile) lists no images") }

        // Names first: a bundle that cannot be registered is refused before anything else is judged.
        let foreign = layoutIndex.manifests.filter { $0.annotations?[ImageLayout.coveRefAnnotation] == nil }.count
        let names = try layoutIndex.manifests.enumerated().map { i, d in
            try name(d, position: i, naming: naming, foreignImages: foreign, router: mirror.router)
        }

        // Verify every image's closure.
        var verifier = Verifier(staging: staging)
        for (d, image) in zip(layoutIndex.manifests, names) {
            guard let digest = try? Digest(d.digest) else { throw BundleError("\(ImageLayout.indexFile): \(image) has an invalid digest \(d.digest)") }
            try verifier.manifest(digest, size: d.size, mediaType: d.mediaType, image: image.description)
        }
        try verifier.checkRemainingHashes()

        // Commit: files, then every row in one transaction.
        let now = mirror.configuration.now()
        var records = ImportRecords(blobs: [], manifests: [], tags: [], pins: [])
        for (digest, m) in verifier.manifests.sorted(by: { $0.key < $1.key }) {
            let owner = names[m.image]
            records.blobs.append(BlobRecord(digest: digest.description, size: m.size, mediaType: m.mediaType, createdAt: now, lastAccessAt: now))
            let children = m.summary.manifests.map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "manifest", size: $0.size, platform: $0.platform)
            } + m.summary.blobs.map {
                ManifestChildRecord(parentDigest: digest.description, childDigest: $0.digest.description, kind: "blob", size: $0.size, platform: nil)
            }
            records.manifests.append((ManifestRecord(digest: digest.description, mediaType: m.mediaType, registry: owner.registry,
                                                     repository: owner.repository.value), children))
        }
        for (digest, size) in verifier.blobs.sorted(by: { $0.key < $1.key }) {
            records.blobs.append(BlobRecord(digest: digest.description, size: size, mediaType: MediaType.octetStream, createdAt: now, lastAccessAt: now))
        }
        var lines: [ImportReport.Image] = []
        for (d, image) in zip(layoutIndex.manifests, names) {
            // `name:tag` and `name:tag@digest` (exported as the operator named it) both record the tag.
            let tag: Tag? = if case .tag(let t) = image.reference { t } else { image.tag }
            if let tag {
                records.tags.append(TagRecord(registry: image.registry, repository: image.repository.value, tag: tag.value, digest: d.digest,
                                              fetchedAt: now, checkedAt: now))
            }
            records.pins.append(PinRecord(registry: image.registry, repository: image.repository.value, reference: image.reference.description,
                                          digest: d.digest, pinnedAt: now))
            let type = (try? Digest(d.digest)).flatMap { verifier.manifests[$0]?.mediaType } ?? d.mediaType ?? ""
            lines.append(.init(image: image.description, digest: d.digest, mediaType: type))
        }
        let all = Array(verifier.manifests.keys) + Array(verifier.blobs.keys)
        // Held until the rows are written: no eviction removes a file this import counts on.
        let leases = all.map { mirror.cacheUse.acquireForWrite($0.description) }
        defer { withExtendedLifetime(leases) {} }
        var installed: [Digest] = []
        var newBytes: Int64 = 0
        do {
            for digest in all {
                if cache.store.contains(digest) { continue }
                guard let file = staging.files[digest] else {
                    throw BundleError("\(digest) was cached when the import started and has been evicted since; run the import again")
                }
                try cache.store.install(verified: file.path, as: digest)
                staging.files[digest] = nil
                installed.append(digest)
                newBytes += file.size
            }
            try cache.index.register(records)
        } catch {
            for digest in installed { cache.store.remove(digest) }
            if let e = error as? BundleError { throw e }
            throw BundleError("cannot commit the import: \(error)")
        }
        let elapsed = ContinuousClock.now - started
        return ImportReport(images: lines, blobs: all.count, newBlobs: installed.count, bytes: verifier.bytes, newBytes: newBytes,
                            absentChildren: verifier.absentChildren, seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    // MARK: - Naming

    /// Where image `d` (the `position`th of `index.json`) goes: Cove's annotation; else `--as`; else a
    /// `org.opencontainers.image.ref.name` that is a whole reference.
    static func name(_ d: LayoutDescriptor, position: Int, naming: Naming, foreignImages: Int, router: UpstreamRouter) throws -> ImageReference {
        let label = "\(ImageLayout.indexFile) image \(position + 1) (\(d.digest))"
        if let full = d.annotations?[ImageLayout.coveRefAnnotation] {
            do { return try parseFull(full) } catch { throw BundleError("\(label): annotation \(ImageLayout.coveRefAnnotation) \"\(full)\" is not a reference: \(error)") }
        }
        let refName = d.annotations?[ImageLayout.refNameAnnotation]
        let refIsTag = refName.map { !$0.contains("/") && !$0.contains(":") && !$0.contains("@") && (try? Tag($0)) != nil } ?? false
        do {
            if let target = naming.target {
                let (repository, explicit) = splitReference(target)
                if let explicit {
                    guard foreignImages == 1 else {
                        throw BundleError("--as \(target) names one image, but the bundle has \(foreignImages) without Cove's annotation; give --as a repository only")
                    }
                    return try ImageReference.parse(repository + explicit, router: router)
                }
                if let refName, refIsTag { return try ImageReference.parse("\(repository):\(refName)", router: router) }
                if let refName, case (_, let tag?) = splitReference(refName) { return try ImageReference.parse(repository + tag, router: router) }
                return try ImageReference.parse("\(repository)@\(d.digest)", router: router)
            }
            if let refName, !refIsTag { return try ImageReference.parse(refName, router: router) }
        } catch let e as BundleError {
            throw e
        } catch {
            throw BundleError("\(label): \(error)")
        }
        let what = refName.map { "is named only \"\($0)\" (\(ImageLayout.refNameAnnotation))" } ?? "has no name"
        throw BundleError("\(label) \(what); say which repository it belongs to with --as REGISTRY/REPOSITORY (e.g. --as docker.io/library/busybox)")
    }

    /// `text` split into the name and an explicit `:tag` / `@digest` suffix (nil when it has none).
    static func splitReference(_ text: String) -> (String, String?) {
        if let at = text.firstIndex(of: "@") { return (String(text[..<at]), String(text[at...])) }
        if let colon = text.lastIndex(of: ":"), !text[colon...].contains("/") { return (String(text[..<colon]), String(text[colon...])) }
        return (text, nil)
    }

    /// Cove's own annotation: `<registry>/<repository>:<tag>`, `@<digest>` or `:<tag>@<digest>`, taken literally
    /// (the registry as the exporting cache keyed it).
    static func parseFull(_ text: String) throws -> ImageReference {
        var (name, suffix) = splitReference(text)
        var tag: Tag?
        if suffix?.hasPrefix("@") == true, case (let bare, let tagSuffix?) = splitReference(name) {
            tag = try Tag(String(tagSuffix.dropFirst()))
            name = bare
        }
        guard let slash = name.firstIndex(of: "/"), let suffix else { throw BundleError("needs registry/repository:tag or @digest") }
        let registry = String(name[..<slash])
        let repository = try RepositoryName(String(name[name.index(after: slash)...]))
        let reference: Reference = suffix.hasPrefix("@") ? .digest(try Digest(String(suffix.dropFirst()))) : .tag(try Tag(String(suffix.dropFirst())))
        return ImageReference(registry: registry, repository: repository, reference: reference, tag: tag)
    }
}

/// The bundle's files as staged in `tmp/`, with what they hash to.
final class Staging {
    struct File {
        var path: String
        var size: Int64
        /// What the bytes hash to (a signed schema 1 manifest's name is its payload's digest instead).
        var hash: Digest
        /// The entry's name in the bundle, for messages.
        var entry: String
    }

    let store: BlobStore
    let index: CacheIndex
    let prefix: String
    var marker: [UInt8]?
    /// `index.json`'s bytes.
    var indexJSON: [UInt8]?
    /// Staged files by the digest their entry names.
    var files: [Digest: File] = [:]
    /// Entries whose digest is already cached: hashed, not copied (digest → size, hash, entry).
    var cached: [Digest: File] = [:]
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

    init(store: BlobStore, index: CacheIndex) {
        self.store = store
        self.index = index
        prefix = store.temporaryDirectory.path + "/import-" + UUID().uuidString.prefix(8) + "-"
    }

    /// The size and hash of a bundle entry, staged or already cached.
    func entry(_ digest: Digest) -> File? { files[digest] ?? cached[digest] }

    /// Removes every staged file (committed ones were moved away already).
    func removeAll() {
        for f in files.values { unlink(f.path) }
        files = [:]
    }

    func readTar(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BundleError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let tar = TarReader(fd: fd)
        do {
            while let entry = try tar.next() {
                guard entry.kind == .file else { continue }
                try take(entry.path, size: entry.size, readAll: { try tar.readAll(limit: BundleImport.maxDocumentSize) },
                         read: { try tar.read(into: $0) })
            }
        } catch let e as TarError {
            throw BundleError("\(path): \(e)")
        }
    }

    func readDirectory(_ path: String) throws {
        let root = URL(fileURLWithPath: path)
        var names = [ImageLayout.markerFile, ImageLayout.indexFile]
        let blobs = root.appendingPathComponent(ImageLayout.blobsDirectory)
        for algorithm in (try? FileManager.default.contentsOfDirectory(atPath: blobs.path)) ?? [] {
            for hex in (try? FileManager.default.contentsOfDirectory(atPath: blobs.appendingPathComponent(algorithm).path)) ?? [] {
                names.append("\(ImageLayout.blobsDirectory)/\(algorithm)/\(hex)")
            }
        }
        for name in names {
            let file = root.appendingPathComponent(name).path
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            if fd < 0, errno == ENOENT { continue }
            guard fd >= 0 else { throw BundleError("cannot open \(file): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let size = Int64(st.st_size)
            var left = size
            func readSome(_ raw: UnsafeMutableRawBufferPointer) throws -> Int {
                guard left > 0 else { return 0 }
                let n = Glibc.read(fd, raw.baseAddress, Int(min(Int64(raw.count), left)))
                guard n > 0 else { throw BundleError("\(name): read failed or file shrank (\(left) of \(size) bytes missing)") }
                left -= Int64(n)
                return n
            }
            try take(name, size: size, readAll: {
                guard size <= BundleImport.maxDocumentSize else { throw BundleError("\(name) is \(size) bytes, more than \(BundleImport.maxDocumentSize)") }
                var out = [UInt8](repeating: 0, count: Int(size))
                var filled = 0
                while filled < out.count { filled += try out.withUnsafeMutableBytes { try readSome(UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) } }
                return out
            }, read: readSome)
        }
    }

    /// One bundle entry: the marker and `index.json` are kept in memory, blobs staged (or, when cached, hashed),
    /// anything else ignored.
    private func take(_ name: String, size: Int64, readAll: () throws -> [UInt8], read: (UnsafeMutableRawBufferPointer) throws -> Int) throws {
        var clean = name
        while clean.hasPrefix("./") { clean.removeFirst(2) }
        if clean == ImageLayout.markerFile { marker = try readAll(); return }
        if clean == ImageLayout.indexFile { indexJSON = try readAll(); return }
        guard let digest = ImageLayout.digest(atPath: clean), files[digest] == nil, cached[digest] == nil else { return }
        let alreadyCached = store.contains(digest) && ((try? index.blob(digest.description)) ?? nil) != nil
        var fd: Int32 = -1
        let path = prefix + digest.hex.prefix(16)
        if !alreadyCached {
            fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw BundleError("cannot create \(path): \(String(cString: strerror(errno)))") }
            files[digest] = File(path: path, size: size, hash: digest, entry: clean)  // removed on failure from here on
        }
        defer { if fd >= 0 { close(fd) } }
        var hasher = DigestHasher(digest.algorithm)
        var total: Int64 = 0
        while true {
            let n = try buffer.withUnsafeMutableBytes { try read($0) }
            if n == 0 { break }
            try buffer.withUnsafeBytes { raw in
                let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                hasher.update(chunk)
                var written = 0
                while fd >= 0, written < n {
                    let w = write(fd, chunk.baseAddress! + written, n - written)
                    if w < 0 {
                        if errno == EINTR { continue }
                        throw BundleError(errno == ENOSPC ? "no space left on the storage file system while staging \(clean)" : "cannot write \(path): \(String(cString: strerror(errno)))")
                    }
                    written += w
                }
            }
            total += Int64(n)
        }
        guard total == size else { throw BundleError("\(clean): \(total) bytes read, \(size) announced") }
        if fd >= 0, fsync(fd) != 0 { throw BundleError("cannot fsync \(path): \(String(cString: strerror(errno)))") }
        let file = File(path: path, size: size, hash: hasher.finalize(), entry: clean)
        if alreadyCached { cached[digest] = file } else { files[digest] = file }
    }
}

/// Walks each image's closure over the staged entries, checking shapes, digests and sizes.
struct Verifier {
    struct Manifest {
        var mediaType: String
        var size: Int64
        var summary: ManifestSummary
        /// Index of the first image (in `index.json`) that names it: its repository is recorded with it.
        var image: Int
    }

    let staging: Staging
    /// Verified manifests and blobs (digest → size).
    var manifests: [Digest: Manifest] = [:]
    var blobs: [Digest: Int64] = [:]
    /// Children of an index the bundle does not hold (a platform subset).
    var absentChildren = 0
    private var imageNumber = -1
    private var currentImage = ""

    init(staging: Staging) { self.staging = staging }

    /// Bytes of every verified object.
    var bytes: Int64 { manifests.values.reduce(0) { $0 + $1.size } + blobs.values.reduce(0, +) }

    mutating func manifest(_ digest: Digest, size: Int64, mediaType: String?, image: String) throws {
        imageNumber += 1
        currentImage = image
        try verifyManifest(digest, size: size, mediaType: mediaType, parent: "\(ImageLayout.indexFile)")
    }

    private mutating func verifyManifest(_ digest: Digest, size: Int64, mediaType: String?, parent: String) throws {
        if manifests[digest] != nil { return }
        guard let entry = staging.entry(digest) else {
            throw BundleError("\(currentImage): \(parent) names manifest \(digest), but the bundle has no \(ImageLayout.blobPath(digest))")
        }
        guard entry.size == size else {
            throw BundleError("\(entry.entry): \(entry.size) bytes, but \(parent) says \(size) (corrupt or truncated bundle)")
        }
        let bytes = try read(entry, digest: digest)
        if staging.files[digest] == nil {
            // Already cached: `bytes` are the cache's verified copy; the bundle's copy must be the same bytes.
            var hasher = DigestHasher(entry.hash.algorithm)
            hasher.update(bytes)
            guard hasher.finalize() == entry.hash else {
                throw BundleError("\(entry.entry): content does not match its digest (corrupt bundle)")
            }
        }
        let summary: ManifestSummary, type: String
        do { (summary, type) = try ManifestSummary.validating(bytes, contentType: mediaType) } catch {
            throw BundleError("\(entry.entry): not a manifest (\(error.message))")
        }
        // The descriptor and the document must agree: serving an OCI body as a Docker manifest breaks clients.
        if let own = summary.mediaType, MediaType.manifestAccept.contains(own), own != type {
            throw BundleError("\(entry.entry): \(parent) calls it \(type), but the manifest says \(own)")
        }
        guard ManifestDigest.of(bytes, mediaType: type, algorithm: digest.algorithm) == digest else {
            throw BundleError("\(entry.entry): content does not match its digest (corrupt bundle)")
        }
        manifests[digest] = Manifest(mediaType: type, size: size, summary: summary, image: imageNumber)
        let here = "manifest \(digest)"
        for child in summary.manifests {
            if staging.entry(child.digest) == nil { absentChildren += 1; continue }  // a platform subset: served as 404 offline
            try verifyManifest(child.digest, size: child.size, mediaType: child.mediaType, parent: here)
        }
        for blob in summary.blobs {
            guard let e = staging.entry(blob.digest) else {
                throw BundleError("\(currentImage): \(here) references blob \(blob.digest), but the bundle has no \(ImageLayout.blobPath(blob.digest))")
            }
            guard blob.size < 0 || e.size == blob.size else {
                throw BundleError("\(e.entry): \(e.size) bytes, but \(here) says \(blob.size) (corrupt or truncated bundle)")
            }
            guard e.hash == blob.digest else { throw BundleError("\(e.entry): content hashes to \(e.hash), not \(blob.digest) (corrupt bundle)") }
            blobs[blob.digest] = e.size
        }
    }

    /// Every staged entry that is not a verified manifest must hash to its name (a flipped byte in an entry no
    /// image uses still rejects the bundle: it is corrupt).
    func checkRemainingHashes() throws {
        for (digest, e) in staging.files.merging(staging.cached, uniquingKeysWith: { a, _ in a }) where manifests[digest] == nil && e.hash != digest {
            throw BundleError("\(e.entry): content hashes to \(e.hash), not \(digest) (corrupt bundle)")
        }
    }

    private func read(_ entry: Staging.File, digest: Digest) throws -> [UInt8] {
        guard entry.size <= BundleImport.maxDocumentSize else { throw BundleError("\(entry.entry): \(entry.size) bytes is too large for a manifest") }
        let path = staging.files[digest] != nil ? entry.path : BlobStore.path(for: digest, root: staging.store.root)
        guard let data = FileManager.default.contents(atPath: path), data.count == entry.size else {
            throw BundleError("cannot read \(entry.entry) back from \(path)")
        }
        return [UInt8](data)
    }
}

/// What `cove import` did.
public struct ImportReport: AdminResponse, Equatable {
    public struct Image: Codable, Sendable, Equatable {
        /// As registered: `registry/repository:tag` or `@digest`.
        public var image: String
        public var digest: String
        public var mediaType: String
    }

    public var images: [Image]
    /// Objects (manifests and blobs) of the images, and how many of them were not cached before.
    public var blobs: Int
    public var newBlobs: Int
    /// Bytes verified, and bytes added to the cache.
    public var bytes: Int64
    public var newBytes: Int64
    /// Children of indexes the bundle does not hold (platform subset): answered 404 `MANIFEST_UNKNOWN` offline.
    public var absentChildren: Int
    public var seconds: Double
    /// Why the import failed (nothing was registered), naming the bad entry; nil when it worked.
    public var failure: String?

    public var exitStatus: Int32 { failure == nil ? 0 : 1 }

    static func failed(_ message: String, seconds: Double) -> ImportReport {
        ImportReport(images: [], blobs: 0, newBlobs: 0, bytes: 0, newBytes: 0, absentChildren: 0, seconds: seconds, failure: message)
    }

    public var text: String {
        if let failure { return "import failed, nothing imported: \(failure)" }
        var lines = images.map { "imported \($0.image) \($0.digest) (\($0.mediaType), pinned)" }
        var summary = "imported \(images.count) images, \(blobs) blobs (\(newBlobs) new), \(ByteFormat.human(bytes)) (\(bytes) bytes, "
            + "\(newBytes) new) in \(String(format: "%.1f", seconds)) s"
        if absentChildren > 0 { summary += "; \(absentChildren) platform manifests not in the bundle (404 offline)" }
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

/// `cove import BUNDLE [--as REPOSITORY[:TAG]]` (`BundleImport.run`), in this process or inside the running server,
/// which reads the bundle from `path` itself.
public struct ImportCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        /// Absolute path of the bundle (tar file or layout directory), readable by the process that runs the command.
        public var path: String
        /// `--as`.
        public var target: String?
        public init(path: String, target: String?) {
            self.path = path
            self.target = target
        }
    }

    public typealias Response = ImportReport
    public static let name = "import"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> ImportReport {
        let started = ContinuousClock.now
        return await withCheckedContinuation { c in
            // Hashing gigabytes: off the cooperative pool.
            Thread.detachNewThread {
                do {
                    c.resume(returning: try BundleImport.run(path: request.path, naming: .init(target: request.target), cache: cache))
                } catch {
                    let elapsed = ContinuousClock.now - started
                    c.resume(returning: .failed("\(error)", seconds: Double(elapsed.components.seconds)))
                }
            }
        }
    }
}
