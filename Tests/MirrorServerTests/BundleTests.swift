import BlobStore
import CacheAdmin
import CacheIndex
import Foundation
import Logging
import Mirror
import OCI
import OCIBundle
import Testing
import Upstream
#if canImport(Glibc)
import Glibc
#endif

/// `cove export` / `cove import` in process: a Cove filled through pulls exports an OCI layout tar; a fresh,
/// offline Cove imports it and serves every image; damaged bundles change nothing.
@Suite("Export and import bundles", .serialized)
struct BundleTests {
    /// An upstream with `team/app:v1` (OCI manifest), `team/multi:v1` (OCI index: amd64, arm64) and
    /// `team/docker:v1` (Docker manifest list of one Docker v2 manifest), all pulled through `cove`.
    struct Filled {
        let up: FaultUpstream
        let cove: InProcessCove
        let single: TestImage
        let amd64: TestImage, arm64: TestImage
        let index: [UInt8], indexDigest: Digest
        let dockerChild: [UInt8], dockerChildDigest: Digest, dockerConfig: [UInt8], dockerLayer: [UInt8]
        let list: [UInt8], listDigest: Digest

        func images(_ names: [String]) throws -> [ImageReference] {
            try names.map { try ImageReference.parse($0, router: cove.mirror.router) }
        }
    }

    static func filled(pullArm64: Bool = true) async throws -> Filled {
        let up = try await FaultUpstream.start()
        let single = up.addImage("team/app", tag: "v1", layers: 2)
        let amd64 = up.addImage("team/multi", tag: "amd64-only")
        let arm64 = up.addImage("team/multi", tag: "arm64-only")
        let index = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(amd64.digest)","size":\#(amd64.manifest.count),"platform":{"architecture":"amd64","os":"linux"}},{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(arm64.digest)","size":\#(arm64.manifest.count),"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}"#.utf8)
        let indexDigest = up.addManifest("team/multi", tag: "v1", body: index, mediaType: MediaType.ociIndex)
        let dockerConfig = Array(#"{"architecture":"amd64","os":"linux","docker":true}"#.utf8)
        let dockerLayer = FaultUpstream.randomBytes(5000)
        let dc = up.addBlob(dockerConfig), dl = up.addBlob(dockerLayer)
        let dockerChild = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":\#(dockerConfig.count),"digest":"\#(dc)"},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":\#(dockerLayer.count),"digest":"\#(dl)"}]}"#.utf8)
        let dockerChildDigest = up.addManifest("team/docker", tag: "child", body: dockerChild, mediaType: MediaType.dockerManifest)
        let list = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":\#(dockerChild.count),"digest":"\#(dockerChildDigest)","platform":{"architecture":"amd64","os":"linux"}}]}"#.utf8)
        let listDigest = up.addManifest("team/docker", tag: "v1", body: list, mediaType: MediaType.dockerManifestList)

        let cove = try await InProcessCove(upstream: up.url)
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        #expect(try await curl("\(cove.url)/v2/team/multi/manifests/v1").body == index)
        #expect(try await pull(cove, "team/multi", tag: amd64.digest.description).ok)
        if pullArm64 { #expect(try await pull(cove, "team/multi", tag: arm64.digest.description).ok) }
        #expect(try await curl("\(cove.url)/v2/team/docker/manifests/v1").body == list)
        #expect(try await pull(cove, "team/docker", tag: dockerChildDigest.description).ok)
        let all = single.blobs.map(\.0) + amd64.blobs.map(\.0) + (pullArm64 ? arm64.blobs.map(\.0) : []) + [dc, dl]
        #expect(await eventually { all.allSatisfy { cove.isCached($0.description) } })
        return Filled(up: up, cove: cove, single: single, amd64: amd64, arm64: arm64, index: index, indexDigest: indexDigest,
                      dockerChild: dockerChild, dockerChildDigest: dockerChildDigest, dockerConfig: dockerConfig, dockerLayer: dockerLayer,
                      list: list, listDigest: listDigest)
    }

    static func tempPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("bundle-\(UUID().uuidString)-\(name)").path
    }

    /// Exports `images` from `f.cove` into a new tar file.
    static func export(_ f: Filled, _ images: [String], platforms: [String] = []) throws -> (path: String, totals: BundleExport.Totals, plan: BundleExport.Plan) {
        let plan = try BundleExport.plan(try f.images(images), platforms: platforms, index: f.cove.mirror.index, root: f.cove.storage)
        let path = tempPath("bundle.tar")
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw TestFailure("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let totals = try BundleExport.write(plan, root: f.cove.storage, to: fd)
        return (path, totals, plan)
    }

    /// The message of the `BundleError` exporting `images` throws ("" when it does not throw).
    static func exportError(_ f: Filled, _ images: [String], platforms: [String] = []) -> String {
        do {
            let r = try export(f, images, platforms: platforms)
            unlink(r.path)
            return ""
        } catch {
            return "\(error)"
        }
    }

    /// The tar's files by name.
    static func members(_ path: String) throws -> [String: [UInt8]] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let tar = TarReader(fd: fd)
        var out: [String: [UInt8]] = [:]
        while let e = try tar.next() {
            if e.kind == .file { out[e.path] = try tar.readAll(limit: 1 << 26) }
        }
        return out
    }

    /// A fresh offline Cove with the same registry name (its endpoint is never contacted).
    static func offlineCove() async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint("http://127.0.0.1:9")])],
                                configuration: MirrorConfiguration(offline: true))
    }

    static func importBundle(_ path: String, into cove: InProcessCove, as target: String? = nil) async throws -> ImportReport {
        var logger = Logger(label: "bundle-test")
        logger.logLevel = .critical
        return try await ImportCommand.run(.init(path: path, target: target), on: CacheAdmin(mirror: cove.mirror, reconciliation: nil, logger: logger))
    }

    /// Everything an import could change: rows, pins, files under blobs/ and tmp/.
    static func snapshot(_ cove: InProcessCove) throws -> String {
        let c = try cove.mirror.index.catalog()
        let files = (FileManager.default.enumerator(atPath: cove.storage.appendingPathComponent("blobs").path)?.allObjects as? [String] ?? []).sorted()
        return "\(c.manifests.map(\.digest).sorted()) \(c.tags.map { "\($0.repository):\($0.tag)=\($0.digest)" }.sorted()) "
            + "\(c.blobs.map(\.digest).sorted()) \(c.children.count) \(try cove.mirror.pins().map(\.reference)) \(files) \(cove.tmpFiles())"
    }

    @Test func exportKeepsManifestBytesAndMediaTypesAndImportServesOffline() async throws {
        let f = try await Self.filled()
        defer { f.up.stop(); f.cove.stop() }
        let (path, totals, _) = try Self.export(f, ["upstream.test/team/app:v1", "team/multi:v1", "team/docker:v1", "team/app@\(f.single.digest)"])
        defer { unlink(path) }
        let files = try Self.members(path)
        #expect(files["oci-layout"] == ImageLayout.markerBytes)
        let index = try LayoutIndex.decode(try #require(files["index.json"]))
        #expect(index.manifests.map(\.digest) == [f.single.digest, f.indexDigest, f.listDigest, f.single.digest].map(\.description))
        #expect(index.manifests.map(\.mediaType) == [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest])
        #expect(index.manifests.map(\.size) == [f.single.manifest.count, f.index.count, f.list.count, f.single.manifest.count].map(Int64.init))
        #expect(index.manifests.map { $0.annotations?[ImageLayout.refNameAnnotation] } == ["v1", "v1", "v1", nil])
        #expect(index.manifests.map { $0.annotations?[ImageLayout.coveRefAnnotation] } == [
            "upstream.test/team/app:v1", "upstream.test/team/multi:v1", "upstream.test/team/docker:v1", "upstream.test/team/app@\(f.single.digest)"])
        // Byte-exact: the Docker list stays a Docker list, every object once.
        #expect(files[ImageLayout.blobPath(f.listDigest)] == f.list)
        #expect(files[ImageLayout.blobPath(f.indexDigest)] == f.index)
        #expect(files[ImageLayout.blobPath(f.dockerChildDigest)] == f.dockerChild)
        for (d, bytes) in f.single.blobs + f.amd64.blobs + f.arm64.blobs { #expect(files[ImageLayout.blobPath(d)] == bytes) }
        let objects = 3 + 2 + 2 + 2 + 2 + 1 + 1 + 2  // app (manifest, config, 2 layers), index, 2 children, their 4 blobs, list, child, 2 blobs
        #expect(files.count == objects + 2 && totals.blobs == objects && totals.images == 4)
        #expect(totals.bytes == Int64((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? -1))

        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        let report = try await Self.importBundle(path, into: offline)
        #expect(report.failure == nil && report.exitStatus == 0, "\(report.text)")
        #expect(report.images.count == 4 && report.newBlobs == objects && report.absentChildren == 0)
        #expect(report.text.contains("imported 4 images"))
        // Served offline, byte-exact, by tag, by path prefix and with ns=.
        #expect(try await pull(offline, "team/app", tag: "v1").ok)
        #expect(try await pull(offline, "upstream.test/team/app", tag: "v1").ok)
        #expect(try await pull(offline, "team/app", tag: "v1", query: "ns=upstream.test").ok)
        let list = try await curl("\(offline.url)/v2/team/docker/manifests/v1")
        #expect(list.body == f.list && list.headers["content-type"] == MediaType.dockerManifestList)
        #expect(list.headers["docker-content-digest"] == f.listDigest.description)
        #expect(try await pull(offline, "team/docker", tag: f.dockerChildDigest.description).ok)
        #expect(try await curl("\(offline.url)/v2/team/multi/manifests/v1").body == f.index)
        #expect(try await pull(offline, "team/multi", tag: f.arm64.digest.description).ok)
        // Imported content is pinned.
        #expect(Set(try offline.mirror.pins().map(\.reference)) == ["v1", f.single.digest.description])
        #expect(offline.tmpFiles().isEmpty)

        // Importing again adds nothing new and still works.
        let again = try await Self.importBundle(path, into: offline)
        #expect(again.failure == nil && again.newBlobs == 0)
    }

    @Test func platformSubsetKeepsTheIndexAndAbsentChildrenAre404Offline() async throws {
        let f = try await Self.filled(pullArm64: false)
        defer { f.up.stop(); f.cove.stop() }
        // Without --platform an index whose children are not all cached cannot be exported.
        let incomplete = Self.exportError(f, ["team/multi:v1"])
        #expect(incomplete.contains(f.arm64.digest.description) && incomplete.contains("--platform"), "\(incomplete)")
        #expect(Self.exportError(f, ["team/multi:v1"], platforms: ["linux/s390x"]).contains("none of the platforms"))
        let (path, _, plan) = try Self.export(f, ["team/multi:v1"], platforms: ["linux/amd64"])
        defer { unlink(path) }
        #expect(plan.skippedChildren.count == 1)
        let files = try Self.members(path)
        #expect(files[ImageLayout.blobPath(f.indexDigest)] == f.index)
        #expect(files[ImageLayout.blobPath(f.amd64.digest)] == f.amd64.manifest && files[ImageLayout.blobPath(f.arm64.digest)] == nil)

        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        let report = try await Self.importBundle(path, into: offline)
        #expect(report.failure == nil && report.absentChildren == 1, "\(report.text)")
        #expect(try await curl("\(offline.url)/v2/team/multi/manifests/v1").body == f.index)
        #expect(try await pull(offline, "team/multi", tag: f.amd64.digest.description).ok)
        let absent = try await curl("\(offline.url)/v2/team/multi/manifests/\(f.arm64.digest)")
        #expect(absent.status == 404 && String(decoding: absent.body, as: UTF8.self).contains("MANIFEST_UNKNOWN"))
    }

    @Test func exportOfSomethingNotCachedFailsNamingIt() async throws {
        let f = try await Self.filled(pullArm64: false)
        defer { f.up.stop(); f.cove.stop() }
        #expect(Self.exportError(f, ["team/app:v2"]).contains("upstream.test/team/app:v2 is not cached"))
        // A layer evicted from under its manifest.
        let layer = f.single.layerDigests[1]
        try f.cove.mirror.index.forgetBlob(layer.description)
        #expect(Self.exportError(f, ["team/app:v1"]).contains(layer.description))
        #expect(try BundleExport.allTaggedImages(index: f.cove.mirror.index).map(\.description).contains("upstream.test/team/app:v1"))
    }

    @Test(arguments: ["flip", "truncate", "missing-blob"])
    func damagedBundlesAreRejectedAndChangeNothing(damage: String) async throws {
        let f = try await Self.filled()
        defer { f.up.stop(); f.cove.stop() }
        let (path, _, _) = try Self.export(f, ["team/app:v1", "team/docker:v1"])
        defer { unlink(path) }
        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        // Something cached already, so "unchanged" covers existing rows too.
        let small = try Self.export(f, ["team/docker:v1"])
        defer { unlink(small.path) }
        #expect(try await Self.importBundle(small.path, into: offline).failure == nil)
        let before = try Self.snapshot(offline)

        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let layer = f.single.layerDigests[0]
        let layerName = Array(ImageLayout.blobPath(layer).utf8)
        let headerAt = try #require((0..<(bytes.count - layerName.count)).first { bytes[$0..<($0 + layerName.count)].elementsEqual(layerName) })
        switch damage {
        case "flip": bytes[headerAt + 512 + 1000] ^= 0x01
        case "truncate": bytes = Array(bytes.prefix(headerAt + 512 + 7000))
        default: bytes.replaceSubrange(headerAt..<(headerAt + layerName.count), with: Array(ImageLayout.blobPath(f.single.layerDigests[1]).utf8)) // duplicate name
        }
        // Re-checksum the header we may have renamed, so only the content is wrong.
        if damage == "missing-blob" {
            for i in (headerAt + 148)..<(headerAt + 156) { bytes[i] = 32 }
            let sum = bytes[headerAt..<(headerAt + 512)].reduce(0) { $0 + Int($1) }
            let octal = Array(String(format: "%06o", sum).utf8) + [0, 32]
            bytes.replaceSubrange((headerAt + 148)..<(headerAt + 156), with: octal)
        }
        let bad = Self.tempPath("bad.tar")
        try Data(bytes).write(to: URL(fileURLWithPath: bad))
        defer { unlink(bad) }
        let report = try await Self.importBundle(bad, into: offline)
        #expect(report.exitStatus == 1)
        let failure = report.failure ?? ""
        switch damage {
        case "flip": #expect(failure.contains(ImageLayout.blobPath(layer)) && failure.contains("corrupt"), "\(failure)")
        case "truncate": #expect(failure.contains("truncated") && failure.contains(ImageLayout.blobPath(layer)), "\(failure)")
        default: #expect(failure.contains(layer.description), "\(failure)")
        }
        #expect(try Self.snapshot(offline) == before)
        let missing = try await curl("\(offline.url)/v2/team/app/manifests/v1")
        #expect(missing.status == 404)
    }

    /// Writes a bundle's members into a directory (an OCI layout `cove import` also takes), for edits a tar
    /// cannot take in place.
    static func unpack(_ path: String) throws -> String {
        let dir = tempPath("layout")
        for (name, bytes) in try members(path) {
            let file = URL(fileURLWithPath: dir).appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: file)
        }
        return dir
    }

    /// A manifest the target already caches still has its bundle copy checked; a descriptor that names another
    /// media type than the manifest's own is refused (it would be served with the wrong `Content-Type`).
    @Test(arguments: ["flip-cached-manifest", "media-type"])
    func bundleManifestsAreCheckedEvenWhenCachedAndMustAgreeWithTheirDescriptors(damage: String) async throws {
        let f = try await Self.filled()
        defer { f.up.stop(); f.cove.stop() }
        let (path, _, _) = try Self.export(f, ["team/app:v1", "team/docker:v1"])
        defer { unlink(path) }
        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        #expect(try await Self.importBundle(path, into: offline).failure == nil)
        let before = try Self.snapshot(offline)
        let dir = try Self.unpack(path)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let listFile = URL(fileURLWithPath: dir).appendingPathComponent(ImageLayout.blobPath(f.listDigest))
        let indexFile = URL(fileURLWithPath: dir).appendingPathComponent(ImageLayout.indexFile)
        if damage == "flip-cached-manifest" {
            var bytes = [UInt8](try Data(contentsOf: listFile))
            bytes[bytes.count / 2] ^= 0x01
            try Data(bytes).write(to: listFile)
        } else {
            let text = try String(contentsOf: indexFile, encoding: .utf8)
            try text.replacingOccurrences(of: MediaType.ociManifest, with: MediaType.dockerManifest).write(to: indexFile, atomically: true, encoding: .utf8)
        }
        let report = try await Self.importBundle(dir, into: offline)
        #expect(report.exitStatus == 1)
        let failure = report.failure ?? ""
        if damage == "flip-cached-manifest" {
            #expect(failure.contains(ImageLayout.blobPath(f.listDigest)) && failure.contains("corrupt"), "\(failure)")
        } else {
            #expect(failure.contains(MediaType.dockerManifest) && failure.contains(MediaType.ociManifest), "\(failure)")
        }
        #expect(try Self.snapshot(offline) == before)
    }

    /// `name:tag@digest` (the operator's own pin of a tag to a digest) exports and imports with its tag.
    @Test func aTagPinnedToADigestRoundTrips() async throws {
        let f = try await Self.filled()
        defer { f.up.stop(); f.cove.stop() }
        let (path, _, _) = try Self.export(f, ["team/app:v1@\(f.single.digest)"])
        defer { unlink(path) }
        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        let report = try await Self.importBundle(path, into: offline)
        #expect(report.failure == nil && report.exitStatus == 0, "\(report.text)")
        let p = try await pull(offline, "team/app", tag: "v1")
        #expect(p.ok && p.manifest.body == f.single.manifest)
    }

    @Test func foreignLayoutsNeedToBeToldWhereTheyBelong() async throws {
        let f = try await Self.filled(pullArm64: false)
        defer { f.up.stop(); f.cove.stop() }
        // A layout like skopeo's oci:DIR:v1: ref.name is only the tag, no Cove annotation.
        let dir = Self.tempPath("layout")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/blobs/sha256", withIntermediateDirectories: true)
        try Data(ImageLayout.markerBytes).write(to: URL(fileURLWithPath: dir + "/oci-layout"))
        for (d, bytes) in f.single.blobs + [(f.single.digest, f.single.manifest)] {
            try Data(bytes).write(to: URL(fileURLWithPath: dir + "/" + ImageLayout.blobPath(d)))
        }
        let index = LayoutIndex(manifests: [LayoutDescriptor(mediaType: MediaType.ociManifest, digest: f.single.digest.description,
                                                             size: Int64(f.single.manifest.count), annotations: [ImageLayout.refNameAnnotation: "v7"])])
        try Data(try index.encoded()).write(to: URL(fileURLWithPath: dir + "/index.json"))
        let offline = try await Self.offlineCove()
        defer { offline.stop() }
        let refused = try await Self.importBundle(dir, into: offline)
        #expect(refused.failure?.contains("--as") == true && refused.failure?.contains("\"v7\"") == true, "\(refused.text)")
        let report = try await Self.importBundle(dir, into: offline, as: "upstream.test/other/app")
        #expect(report.failure == nil, "\(report.text)")
        #expect(report.images.map(\.image) == ["upstream.test/other/app:v7"])
        #expect(try await pull(offline, "other/app", tag: "v7").ok)
    }
}
