// The air gap end to end, as issue 9 asks: a real distribution registry with a single-arch image, an OCI index,
// a Docker manifest list and an image with a zstd layer → `cove preload` → `cove export` → `cove import` into a
// fresh storage → `cove serve --offline` with the registry stopped → `skopeo copy` of every image verifies,
// and manifest digests equal the registry's.
import Foundation
import Testing

@Suite("Air gap: preload → export → import → offline serve", .serialized)
struct AirGapRoundTripTests {
    @Test func everyImageSurvivesTheRoundTripByteExact() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.pushAll()
        // The zstd image: an OCI layout made here, pushed as is.
        let zstdLayout = fixture.dir.appendingPathComponent("zstd-layout").path
        let made = try await runCommand("python3", [fixturesDirectory().appendingPathComponent("make_zstd_image.py").path, zstdLayout])
        #expect(made.succeeded, "\(made.summary)")
        let zstdDigest = made.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
        let pushed = try await skopeo(["copy", "--dest-tls-verify=false", "--preserve-digests", "oci:\(zstdLayout):v1",
                                       "docker://\(fixture.registryHost)/zstd:v1"], authFile: fixture.authFile)
        #expect(pushed.succeeded, "\(pushed.summary)")
        var expected = Dictionary(uniqueKeysWithValues: Fixture.imageNames.map { ($0, fixture.image($0).digest) })
        expected["zstd"] = zstdDigest

        // Connected side: preload everything (every platform), then export it.
        let connected = try CoveServer(fixture, name: "connected")
        let preload = try await connected.command(["preload"] + expected.keys.sorted().map { "\(fixture.registryHost)/\($0):v1" }, timeout: 300)
        #expect(preload.succeeded, "\(preload.summary)")
        let bundle = fixture.dir.appendingPathComponent("airgap.tar").path
        let export = try await connected.command(["export", "-o", bundle])
        #expect(export.succeeded && export.stdoutText.contains("exported \(expected.count) images"), "\(export.summary)")

        // Disconnected side: the registry is gone; a fresh storage imports the bundle and serves offline.
        fixture.stopRegistry()
        let airgapped = try CoveServer(fixture, name: "airgapped")
        let imported = try await airgapped.command(["import", bundle])
        #expect(imported.succeeded, "\(imported.summary)")
        try await airgapped.start(offline: true)
        defer { airgapped.process?.stop() }
        for (name, digest) in expected.sorted(by: { $0.key < $1.key }) {
            let head = try await httpRequest("HEAD", "\(airgapped.url)/v2/\(name)/manifests/v1", headers: [
                "Accept: application/vnd.oci.image.index.v1+json", "Accept: application/vnd.docker.distribution.manifest.list.v2+json",
                "Accept: application/vnd.oci.image.manifest.v1+json", "Accept: application/vnd.docker.distribution.manifest.v2+json",
            ])
            #expect(head.status == 200 && head.header("Docker-Content-Digest") == digest, "\(name): \(head.transcript)")
            // skopeo verifies every blob against its digest; dir: keeps Docker media types byte-exact.
            let dest = fixture.dir.appendingPathComponent("offline-\(name)").path
            let copy = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                         "docker://127.0.0.1:\(airgapped.port)/\(name):v1", "dir:\(dest)"], authFile: fixture.authFile)
            #expect(copy.succeeded, "\(name): \(copy.summary)")
            let manifest = try Data(contentsOf: URL(fileURLWithPath: dest + "/manifest.json"))
            #expect(sha256Digest(manifest) == digest, "\(name): the top manifest changed on the way")
        }
        let verify = try await airgapped.command(["verify"])
        #expect(verify.succeeded, "\(verify.summary)")
    }
}
