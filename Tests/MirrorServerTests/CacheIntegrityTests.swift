import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// What Cove does when its own cache is damaged, unreadable or shared, and HEAD/GET parity on edge requests.
@Suite("Cache integrity", .serialized)
struct CacheIntegrityTests {
    static let manifestBody = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(String(repeating: "a", count: 64))","size":2},"layers":[]}"#.utf8)

    func path(_ cove: InProcessCove, _ digest: Digest) -> String {
        cove.storage.path + "/blobs/sha256/\(digest.hex.prefix(2))/\(digest.hex)"
    }

    @Test func alteredManifestIsNeverServedAndIsRefetched() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let digest = up.addManifest("team/app", tag: "v1", body: Self.manifestBody)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let first = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(first.status == 200 && first.body == Self.manifestBody)
        // Same size, one byte changed on disk.
        var altered = Self.manifestBody
        altered[10] ^= 0x20
        try Data(altered).write(to: URL(fileURLWithPath: path(cove, digest)))
        let gets = up.count("GET", "/manifests/")
        let again = try await curl("\(cove.url)/v2/team/app/manifests/\(digest)")
        #expect(again.status == 200)
        #expect(again.body == Self.manifestBody)
        #expect(up.count("GET", "/manifests/") == gets + 1)  // re-fetched, not served from the bad file
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path(cove, digest)))
        #expect(Digest.sha256(of: onDisk) == digest)
    }

    @Test func damagedManifestOfflineIsA404NotBadBytes() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let digest = up.addManifest("team/app", tag: "v1", body: Self.manifestBody)
        let storage: URL
        do {
            let cove = try await InProcessCove(upstream: up.url)
            #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").status == 200)
            storage = cove.storage
            try Data(Self.manifestBody.prefix(100)).write(to: URL(fileURLWithPath: path(cove, digest)))
            cove.stop(keepStorage: true)
        }
        let offline = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                              configuration: MirrorConfiguration(offline: true), storage: storage)
        defer { offline.stop() }
        let r = try await curl("\(offline.url)/v2/team/app/manifests/v1")
        #expect(r.status == 404)
        #expect(String(decoding: r.body, as: UTF8.self).contains("MANIFEST_UNKNOWN"))
        let head = try await curl("\(offline.url)/v2/team/app/manifests/\(digest)", method: "HEAD")
        #expect(head.status == 404)
    }

    @Test func truncatedBlobIsRefetchedWhole() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(300_000)
        let digest = up.addBlob(bytes)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(digest)").body == bytes)
        // Readers are released at verification, before fsync and rename: wait for the commit.
        #expect(await eventually { cove.isCached(digest.description) })
        try Data(bytes.prefix(1000)).write(to: URL(fileURLWithPath: path(cove, digest)))
        let head = try await curl("\(cove.url)/v2/a/blobs/\(digest)", method: "HEAD")
        #expect(head.headers["content-length"] == "300000")
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        #expect(up.count("GET", "/blobs/") == 2)
        #expect(await eventually { cove.isCached(digest.description) })
    }

    @Test func unreadableCachedFileIsA503AndIsNotForgotten() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(5000)
        let digest = up.addBlob(bytes)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(digest)").body == bytes)
        #expect(await eventually { cove.isCached(digest.description) })
        // A symlink loop makes open(2) fail with ELOOP: the file "is there" but cannot be opened, like EMFILE.
        let file = path(cove, digest)
        try FileManager.default.moveItem(atPath: file, toPath: file + ".saved")
        try FileManager.default.createSymbolicLink(atPath: file, withDestinationPath: file)
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.status == 503)
        #expect(String(decoding: r.body, as: UTF8.self).contains("UNAVAILABLE"))
        #expect(((try? cove.mirror.index.blob(digest.description)) ?? nil) != nil)  // the index row survives
        #expect(up.count("GET", "/blobs/") == 1)
        try FileManager.default.removeItem(atPath: file)
        try FileManager.default.moveItem(atPath: file + ".saved", toPath: file)
        let back = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(back.status == 200 && back.body == bytes)
        #expect(up.count("GET", "/blobs/") == 1)
    }

    @Test func aSecondCoveCannotTakeTheSameStorage() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        // A fill's temp file that must survive the failed start of a second process.
        let marker = cove.storage.appendingPathComponent("tmp/in-flight")
        _ = FileManager.default.createFile(atPath: marker.path, contents: Data([1]))
        do {
            _ = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                        storage: cove.storage)
            Issue.record("a second Cove opened storage that is in use")
        } catch {
            #expect("\(error)".contains("in use"))
        }
        #expect(FileManager.default.fileExists(atPath: marker.path))
    }

    @Test func headMatchesGetOnRangesTagsAndEncodedDigests() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(788)
        let digest = up.addBlob(bytes)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let url = "\(cove.url)/v2/a/blobs/\(digest)"
        for range in ["bytes=-0", "bytes=788-", "bytes=99999999999999999999-", "BYTES=0-5", "bytes=+1-5", "bytes=0-99999999999999999999"] {
            let get = try await curl(url, headers: ["Range: \(range)"])
            let head = try await curl(url, method: "HEAD", headers: ["Range: \(range)"])
            #expect(get.status == head.status, "\(range): GET \(get.status), HEAD \(head.status)")
            #expect(get.headers["content-range"] == head.headers["content-range"], "\(range)")
            #expect(get.headers["content-length"] == head.headers["content-length"], "\(range)")
        }
        #expect(try await curl(url, headers: ["Range: bytes=99999999999999999999-"]).status == 416)
        let upper = try await curl(url, headers: ["Range: BYTES=0-5"])
        #expect(upper.status == 206 && upper.body == Array(bytes[0...5]))
        #expect(try await curl(url, headers: ["Range: bytes=+1-5"]).status == 200)  // not a valid position: ignored
        // sha256%3A... is the same digest (distribution decodes the path too).
        let encoded = try await curl("\(cove.url)/v2/a/blobs/sha256%3A\(digest.hex)")
        #expect(encoded.status == 200 && encoded.body == bytes)
        let bad = try await curl("\(cove.url)/v2/a/blobs/sha256%ZZ\(digest.hex)")
        #expect(bad.status == 400)
    }
}
