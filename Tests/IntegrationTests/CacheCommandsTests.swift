// `cove gc`, `cove pin`, `cove unpin` on the real binary, against a cache filled by a real `cove serve` from a
// real distribution registry with skopeo. The commands run in-process on the storage (taking its lock), so
// the server is stopped first; a running server makes them fail with a message saying so.
import Foundation
import Testing

@Suite("Cache commands on the cove binary", .serialized)
struct CacheCommandsTests {
    func blobPath(_ storage: String, _ digest: String) -> String {
        let hex = digest.split(separator: ":")[1]
        return storage + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
    }

    func digests(_ image: ImageSummary) -> Set<String> {
        Set(image.allManifests.map(\.digest) + image.blobs.map(\.digest))
    }

    @Test func gcDryRunGcPinAndUnpin() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.pushAll()
        let cove = try await fixture.startCove()
        for name in ["single", "index"] {
            let dest = fixture.dir.appendingPathComponent("pulls/\(name)")
            try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
            let r = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                      "docker://\(cove.host)/\(name):v1", "oci:\(dest.path):pulled"], authFile: fixture.authFile)
            #expect(r.succeeded, "\(r.summary)")
        }
        let bin = try coveBinary()
        // While the server runs, gc goes through its admin socket: its config has no size limit, so nothing goes.
        let busy = try await runCommand(bin, ["gc", "--config", cove.configPath])
        #expect(busy.succeeded && busy.stdoutText.contains("evicted 0 objects"), "\(busy.summary)")
        cove.stop()

        // The commands' config: the same storage and upstream, a one-byte budget, no free-space floor.
        let config = fixture.dir.appendingPathComponent("gc.yml")
        try """
        storage: "\(cove.storage)"
        upstream:
          url: "\(fixture.registryURL)"
        cache:
          max_size: 1
          min_free: 0
        """.write(to: config, atomically: true, encoding: .utf8)
        let single = digests(fixture.image("single")), index = digests(fixture.image("index"))
        for d in single.union(index) { #expect(FileManager.default.fileExists(atPath: blobPath(cove.storage, d)), "cached \(d)") }

        let pin = try await runCommand(bin, ["pin", "--config", config.path, "\(fixture.registryHost)/index:v1", "later:v2"])
        #expect(pin.succeeded, "\(pin.summary)")
        #expect(pin.stdoutText.contains("pinned \(fixture.registryHost)/index:v1 (\(fixture.image("index").digest)"), "\(pin.summary)")
        #expect(pin.stdoutText.contains("pinned \(fixture.registryHost)/later:v2 (not cached yet"), "\(pin.summary)")
        let bad = try await runCommand(bin, ["pin", "--config", config.path, "Not A Name"])
        #expect(!bad.succeeded && bad.stdoutText.contains("cannot pin"), "\(bad.summary)")

        let evictable = single.subtracting(index)
        let dry = try await runCommand(bin, ["gc", "--dry-run", "--config", config.path])
        #expect(dry.succeeded, "\(dry.summary)")
        #expect(dry.stdoutText.contains("would evict \(evictable.count) objects"), "\(dry.summary)")
        for d in single { #expect(FileManager.default.fileExists(atPath: blobPath(cove.storage, d)), "dry run kept \(d)") }

        let gc = try await runCommand(bin, ["gc", "--config", "\(config.path)"])
        #expect(gc.succeeded, "\(gc.summary)")
        #expect(gc.stdoutText.contains("evicted \(evictable.count) objects"), "\(gc.summary)")
        for d in evictable {
            #expect(!FileManager.default.fileExists(atPath: blobPath(cove.storage, d)), "evicted \(d)")
            #expect(gc.stdoutText.contains(d))
        }
        for d in index { #expect(FileManager.default.fileExists(atPath: blobPath(cove.storage, d)), "pinned \(d)") }

        let unpin = try await runCommand(bin, ["unpin", "--config", config.path, "\(fixture.registryHost)/index:v1"])
        #expect(unpin.succeeded && unpin.stdoutText.contains("unpinned"), "\(unpin.summary)")
        let again = try await runCommand(bin, ["unpin", "--config", config.path, "\(fixture.registryHost)/index:v1"])
        #expect(!again.succeeded && again.stdoutText.contains("was not pinned"), "\(again.summary)")
        let last = try await runCommand(bin, ["gc", "--config", config.path])
        #expect(last.succeeded && last.stdoutText.contains("evicted \(index.count) objects"), "\(last.summary)")
        for d in index { #expect(!FileManager.default.fileExists(atPath: blobPath(cove.storage, d)), "unpinned and evicted \(d)") }
    }
}
