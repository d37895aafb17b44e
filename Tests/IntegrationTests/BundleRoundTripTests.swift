// `cove export` → `cove import` → `cove serve` offline, on the real binary: a Cove filled by skopeo from a real
// distribution registry exports a bundle; skopeo reads it as an oci-archive; a fresh Cove imports it (and layouts
// skopeo wrote) and serves every image with the registry stopped; damaged bundles are refused and change nothing.
import Foundation
import Testing

@Suite("Air gap bundles on the cove binary", .serialized)
struct BundleRoundTripTests {
    func header(_ r: HTTPResponse, _ name: String) -> String? {
        r.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }

    /// Files under `<storage>/blobs` and the `cove ls` text: what an import could change.
    func state(_ bin: String, config: String, storage: String) async throws -> String {
        let files = (FileManager.default.enumerator(atPath: storage + "/blobs")?.allObjects as? [String] ?? []).sorted()
        let ls = try await runCommand(bin, ["ls", "--json", "--config", config])
        let tmp = (try? FileManager.default.contentsOfDirectory(atPath: storage + "/tmp")) ?? []
        return "\(files)\n\(ls.stdoutText)\n\(tmp)"
    }

    @Test func exportImportServeOffline() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.pushAll()
        let online = try await fixture.startCove()
        let bin = try coveBinary()
        let host = fixture.registryHost
        for name in Fixture.imageNames {
            let r = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                      // An OCI layout cannot hold a Docker list unconverted; dir: keeps it byte-exact.
                                      "docker://\(online.host)/\(name):v1", name == "dockerlist" ? "dir:\(fixture.dir.path)/pulled-\(name)"
                                        : "oci:\(fixture.dir.path)/pulled-\(name):pulled"], authFile: fixture.authFile)
            #expect(r.succeeded, "\(r.summary)")
        }
        // A layout and an oci-archive written by skopeo, for the foreign-layout imports below.
        let skopeoArchive = fixture.dir.appendingPathComponent("skopeo-single.tar").path
        let sa = try await skopeo(["copy", "--src-tls-verify=false", "--retry-times", "0", "docker://\(online.host)/single:v1",
                                   "oci-archive:\(skopeoArchive):v1"], authFile: fixture.authFile)
        #expect(sa.succeeded, "\(sa.summary)")

        // Export every tagged image while the server runs (export reads without the storage lock).
        let bundle = fixture.dir.appendingPathComponent("bundle.tar").path
        let export = try await runCommand(bin, ["export", "--config", online.configPath, "-o", bundle])
        #expect(export.succeeded, "\(export.summary)")
        #expect(export.stdoutText.contains("exported 3 images"), "\(export.summary)")
        // -o - streams the same archive to standard output (totals on standard error).
        let piped = try await runCommand(bin, ["export", "--config", online.configPath, "-o", "-", "\(host)/single:v1"])
        #expect(piped.succeeded && piped.stderrText.contains("exported 1 images"), "\(piped.summary)")
        let singleBundle = fixture.dir.appendingPathComponent("single.tar")
        try piped.stdout.write(to: singleBundle)
        let inspect = try await skopeo(["inspect", "oci-archive:\(singleBundle.path):v1"], authFile: fixture.authFile)
        #expect(inspect.succeeded, "\(inspect.summary)")
        let inspected = try JSONSerialization.jsonObject(with: inspect.stdout) as? [String: Any]
        #expect(inspected?["Digest"] as? String == fixture.image("single").digest, "\(inspect.stdoutText.prefix(400))")
        let missing = try await runCommand(bin, ["export", "--config", online.configPath, "-o", fixture.dir.path + "/none.tar", "\(host)/nothere:v1"])
        #expect(missing.status == 1 && missing.stderrText.contains("nothere:v1 is not cached"), "\(missing.summary)")
        #expect(!FileManager.default.fileExists(atPath: fixture.dir.path + "/none.tar"))
        online.stop()
        fixture.stopRegistry()

        // A fresh Cove, offline, whose upstream is gone.
        let offline = try await fixture.startCove(extraYAML: "offline: true")
        let check = try await runCommand(bin, ["check-config", "--offline", "--config", online.configPath])
        #expect(check.stdoutText.contains("offline: true"), "\(check.summary)")

        // Damaged bundles change nothing (through the running server's admin socket).
        let before = try await state(bin, config: offline.configPath, storage: offline.storage)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: bundle)))
        let layer = fixture.image("single").blobs.last!.digest
        let entry = "blobs/sha256/" + layer.split(separator: ":")[1]
        let at = try #require((0..<bytes.count).first { bytes[$0..<min(bytes.count, $0 + entry.utf8.count)].elementsEqual(entry.utf8) })
        let flipped = fixture.dir.appendingPathComponent("flipped.tar"), truncated = fixture.dir.appendingPathComponent("truncated.tar")
        try Data(bytes.prefix(at + 512 + 100)).write(to: truncated)
        bytes[at + 512 + 10] ^= 0x20
        try Data(bytes).write(to: flipped)
        for (bad, says) in [(flipped.path, entry), (truncated.path, "truncated")] {
            let r = try await runCommand(bin, ["import", "--config", offline.configPath, bad])
            #expect(r.status == 1 && r.stdoutText.contains(says) && r.stdoutText.contains("nothing imported"), "\(r.summary)")
        }
        #expect(try await state(bin, config: offline.configPath, storage: offline.storage) == before)

        let imported = try await runCommand(bin, ["import", "--config", offline.configPath, bundle])
        #expect(imported.succeeded && imported.stdoutText.contains("imported 3 images"), "\(imported.summary)")
        // A layout directory skopeo wrote: named by --as, its tag from org.opencontainers.image.ref.name.
        let layout = try await runCommand(bin, ["import", "--config", offline.configPath, "--as", "\(host)/fromskopeo", "\(fixture.dir.path)/pulled-index"])
        #expect(layout.succeeded && layout.stdoutText.contains("\(host)/fromskopeo:pulled"), "\(layout.summary)")
        let unnamed = try await runCommand(bin, ["import", "--config", offline.configPath, skopeoArchive])
        #expect(unnamed.status == 1 && unnamed.stdoutText.contains("--as"), "\(unnamed.summary)")

        for name in Fixture.imageNames {
            let image = fixture.image(name)
            let out = fixture.dir.appendingPathComponent("offline-\(name)").path
            let r = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                      "docker://\(offline.host)/\(name):v1", "dir:\(out)"], authFile: fixture.authFile)
            #expect(r.succeeded, "\(name): \(r.summary)")
            for url in ["\(offline.url)/v2/\(name)/manifests/v1", "\(offline.url)/v2/\(name)/manifests/v1?ns=docker.io",
                        "\(offline.url)/v2/\(host)/\(name)/manifests/v1"] {
                let m = try await httpRequest("GET", url, headers: manifestAcceptTypes.map { "Accept: \($0)" })
                #expect(m.status == 200 && header(m, "Docker-Content-Digest") == image.digest, "\(url): \(m.status)")
                #expect(header(m, "Content-Type") == image.mediaType)
            }
        }
        let fromSkopeo = try await skopeo(["copy", "--all", "--src-tls-verify=false", "--retry-times", "0",
                                           "docker://\(offline.host)/fromskopeo:pulled", "oci:\(fixture.dir.path)/fromskopeo:x"], authFile: fixture.authFile)
        #expect(fromSkopeo.succeeded, "\(fromSkopeo.summary)")

        // In this process (no server on that storage): skopeo's oci-archive, into a new storage.
        let fresh = fixture.dir.appendingPathComponent("fresh")
        let freshConfig = fixture.dir.appendingPathComponent("fresh.yml")
        try "storage: \"\(fresh.path)\"\nupstream:\n  url: \"\(fixture.registryURL)\"\n".write(to: freshConfig, atomically: true, encoding: .utf8)
        let local = try await runCommand(bin, ["import", "--config", freshConfig.path, "--as", "\(host)/single", skopeoArchive])
        #expect(local.succeeded && local.stdoutText.contains("imported 1 images"), "\(local.summary)")
        let ls = try await runCommand(bin, ["ls", "--config", freshConfig.path, "\(host)/single"])
        #expect(ls.stdoutText.contains("v1") && ls.stdoutText.contains(fixture.image("single").digest.prefix(19)), "\(ls.summary)")
    }
}
