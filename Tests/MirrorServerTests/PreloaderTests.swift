import CacheAdmin
import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// `Preloader` (`cove preload`) against a `FaultUpstream`, through a real in-process Cove: platform selection,
/// skipping what is cached, pins, per-image failures, a client sharing a preload's fill, referrers, and the
/// admin-socket route a running server offers.
@Suite("Preload", .serialized)
struct PreloaderTests {
    /// An OCI index `team/app:v1` over linux/amd64, linux/arm64/v8 and an attestation manifest (unknown/unknown).
    struct MultiPlatform {
        let amd64: TestImage
        let arm64: TestImage
        let attestation: TestImage
        let index: Digest
    }

    static func multiPlatform(_ up: FaultUpstream, name: String = "team/app") -> MultiPlatform {
        let amd64 = up.addImage(name, tag: "amd64", layers: 2)
        let arm64 = up.addImage(name, tag: "arm64", layers: 2)
        let attestation = up.addImage(name, tag: "att", layers: 1, layerSize: 500)
        func entry(_ image: TestImage, _ platform: String, _ extra: String = "") -> String {
            #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(image.digest)","size":\#(image.manifest.count),"platform":\#(platform)\#(extra)}"#
        }
        let body = Array(("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":["
            + [entry(amd64, #"{"architecture":"amd64","os":"linux"}"#),
               entry(arm64, #"{"architecture":"arm64","os":"linux","variant":"v8"}"#),
               entry(attestation, #"{"architecture":"unknown","os":"unknown"}"#,
                     #","annotations":{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"\#(amd64.digest)"}"#)]
                .joined(separator: ",") + "]}").utf8)
        let index = up.addManifest(name, tag: "v1", body: body, mediaType: MediaType.ociIndex)
        return MultiPlatform(amd64: amd64, arm64: arm64, attestation: attestation, index: index)
    }

    static func run(_ cove: InProcessCove, _ images: [String], platforms: [String] = [], referrers: Bool = false) async throws -> PreloadStatus {
        let preloader = try Preloader(mirror: cove.mirror, images: images, options: PreloadOptions(platforms: platforms, withReferrers: referrers))
        return await preloader.run()
    }

    static func blobGETs(_ up: FaultUpstream, _ image: TestImage) -> Int {
        image.blobs.reduce(0) { $0 + up.count("GET", "/blobs/\($1.0)") }
    }

    @Test func platformFilterThenEveryPlatformSkipsWhatIsCachedAndPinsTheIndex() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let m = Self.multiPlatform(up)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let arm = try await Self.run(cove, ["team/app:v1"], platforms: ["linux/arm64"])
        #expect(arm.finished && arm.failed.isEmpty, "\(arm.images)")
        let image = try #require(arm.images.first)
        #expect(image.state == .done && image.digest == m.index.description && image.platforms == ["linux/arm64/v8"])
        #expect(image.manifests == 2 && image.blobs == 3 && image.blobsFetched == 3 && image.blobsCached == 0)
        #expect(image.bytes == Int64(m.arm64.blobs.reduce(0) { $0 + $1.1.count }) && image.bytesFetched == image.bytes)
        for (d, _) in m.arm64.blobs { #expect(cove.isCached(d.description)) }
        #expect(Self.blobGETs(up, m.amd64) == 0 && Self.blobGETs(up, m.attestation) == 0)
        #expect(up.count("GET", "/manifests/\(m.amd64.digest)") == 0)
        let pins = try cove.mirror.pins()
        #expect(pins.count == 1 && pins[0].reference == "v1" && pins[0].repository == "team/app" && pins[0].digest == m.index.description)

        // Every platform (the default): attestations come along; what is cached is not asked for again.
        let all = try await Self.run(cove, ["team/app:v1"])
        let again = try #require(all.images.first)
        #expect(again.state == .done && again.manifests == 4 && again.blobs == 8, "\(again)")
        #expect(again.blobsCached == 3 && again.blobsFetched == 5 && again.platforms == ["linux/amd64", "linux/arm64/v8", "unknown/unknown"])
        for img in [m.amd64, m.arm64, m.attestation] {
            for (d, _) in img.blobs { #expect(up.count("GET", "/blobs/\(d)") == 1, "one upstream GET for \(d)") }
        }
        // A third run fetches nothing at all.
        let third = try await Self.run(cove, ["team/app:v1"])
        #expect(third.images[0].blobsCached == 8 && third.images[0].blobsFetched == 0 && third.bytesFetched == 0)
        #expect(up.count("GET", "/blobs/") == 8)
    }

    @Test func failuresAreCountedPerImageAndNothingHalfIsPinned() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        _ = Self.multiPlatform(up)
        let good = up.addImage("team/good", tag: "v1")
        let broken = up.addImage("team/broken", tag: "v1", layers: 2)
        up.setFault(broken.layerDigests[1], .status(500))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let s = try await Self.run(cove, ["team/good:v1", "team/missing:v1", "Not A Name", "team/broken:v1"])
        #expect(s.images.map(\.state) == [.done, .failed, .failed, .failed])
        #expect(s.images[1].error?.contains("MANIFEST_UNKNOWN") == true, "\(s.images[1])")
        #expect(s.images[2].error?.contains("NAME_INVALID") == true, "\(s.images[2])")
        #expect(s.images[3].error?.contains("blob \(broken.layerDigests[1])") == true, "\(s.images[3])")
        #expect(s.failed.count == 3 && s.done == 1)
        // The broken image's good blobs are cached (a re-run will skip them) but it is not pinned.
        #expect(cove.isCached(broken.layerDigests[0].description) && cove.isCached(good.layerDigests[0].description))
        #expect(try cove.mirror.pins().map(\.repository) == ["team/good"])

        // No platform of the filter in the index: a failure naming what the index has.
        let none = try await Self.run(cove, ["team/app:v1"], platforms: ["linux/s390x"])
        let message = try #require(none.images[0].error)
        #expect(none.images[0].state == .failed && message.contains("linux/s390x") && message.contains("linux/amd64"), "\(message)")
        #expect(try cove.mirror.pins().map(\.repository) == ["team/good"])
    }

    @Test func aClientAndAPreloadShareOneUpstreamFetch() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/slow", tag: "v1", layerSize: 2_000_000)
        up.setFault(image.layerDigests[0], .slow(chunk: 64 * 1024, milliseconds: 40))  // about 1.3 s
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let preload = Task { try await Self.run(cove, ["team/slow:v1"]) }
        #expect(await eventually { up.count("GET", "/blobs/\(image.layerDigests[0])") == 1 })
        let client = try await curl("\(cove.url)/v2/team/slow/blobs/\(image.layerDigests[0])")
        #expect(client.status == 200 && client.body == image.layers[0])
        let s = try await preload.value
        #expect(s.images[0].state == .done && s.images[0].blobsFetched == 2, "\(s.images)")
        #expect(up.count("GET", "/blobs/\(image.layerDigests[0])") == 1)
    }

    @Test func referrersComeAlongFromTheFallbackTagAndArePinned() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/signed", tag: "v1")
        let signature = up.addImage("team/signed", tag: "sig-holder", layerSize: 300)
        let list = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(signature.digest)","size":\#(signature.manifest.count),"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}]}"#.utf8)
        up.addManifest("team/signed", tag: "sha256-\(image.digest.hex)", body: list, mediaType: MediaType.ociIndex)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let without = try await Self.run(cove, ["team/signed:v1"])
        #expect(without.images[0].referrers == 0 && !cove.isCached(signature.layerDigests[0].description))
        let with = try await Self.run(cove, ["team/signed:v1"], referrers: true)
        #expect(with.images[0].state == .done && with.images[0].referrers == 1, "\(with.images)")
        for (d, _) in signature.blobs { #expect(cove.isCached(d.description)) }
        #expect(try cove.mirror.pins().map(\.reference).sorted() == [signature.digest.description, "v1"])
    }

    @Test func tagAndDigestPinsTheDigestAndRecordsTheTag() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v2")
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let ref = try ImageReference.parse("team/app:v2@\(image.digest)", router: cove.mirror.router)
        #expect(ref.reference == .digest(image.digest) && ref.tag?.value == "v2")
        #expect(try ImageReference.parse("team/app@\(image.digest)", router: cove.mirror.router).tag == nil)

        let s = try await Self.run(cove, ["team/app:v2@\(image.digest)"])
        #expect(s.images[0].state == .done)
        #expect(up.count("GET", "/manifests/v2") == 0)
        let pins = try cove.mirror.pins()
        #expect(pins.count == 1 && pins[0].reference == image.digest.description)
        #expect(try cove.mirror.index.tag(registry: ref.registry, repository: "team/app", tag: "v2")?.digest == image.digest.description)
    }

    @Test func offlineRefusesAndBadPlatformsAreRefused() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(offline: true))
        defer { cove.stop() }
        #expect(throws: PreloadError.self) { try Preloader(mirror: cove.mirror, images: ["team/app:v1"], options: PreloadOptions()) }
        #expect(throws: PreloadError.self) { try PlatformFilter(parsing: "linux") }
        #expect(throws: PreloadError.self) { try PlatformFilter(parsing: "linux/amd64/v1/x") }
        let arm = try PlatformFilter(parsing: "linux/arm64")
        #expect(arm.matches("linux/arm64/v8") && arm.matches("linux/arm64") && !arm.matches("linux/amd64") && !arm.matches(nil))
        let v7 = try PlatformFilter(parsing: "linux/arm/v7")
        #expect(v7.matches("linux/arm/v7") && !v7.matches("linux/arm/v6") && !v7.matches("linux/arm"))
    }

    @Test func throughTheAdminSocketTheServerRunsTheJobAndReportsProgress() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let m = Self.multiPlatform(up)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let admin = try await AdminCommandTests.serveAdmin(cove)
        defer { admin.cancel() }

        let started = try await AdminChannel.runOnServer(PreloadCommand.self, .init(images: ["team/app:v1", "team/nothing:v1"],
                                                                                      options: PreloadOptions(platforms: ["linux/amd64"])),
                                                         storage: cove.storage)
        #expect(started.id != "in-process" && started.status.images.count == 2)
        var status = started
        for _ in 0..<100 where !status.status.finished {
            try await Task.sleep(for: .milliseconds(100))
            status = try await AdminChannel.runOnServer(PreloadStatusCommand.self, .init(id: started.id), storage: cove.storage)
        }
        #expect(status.status.finished && status.exitStatus == 1)
        #expect(status.status.images.map(\.state) == [.done, .failed])
        #expect(status.text.contains("images: 1 done, 1 failed of 2") && status.text.contains("FAILED"), "\(status.text)")
        for (d, _) in m.amd64.blobs { #expect(cove.isCached(d.description)) }
        await #expect(throws: AdminError.self) {
            _ = try await AdminChannel.runOnServer(PreloadStatusCommand.self, .init(id: "nope"), storage: cove.storage)
        }
    }
}
