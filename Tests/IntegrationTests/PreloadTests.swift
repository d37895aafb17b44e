// `cove preload` as an operator runs it: the real binary against a real distribution registry. Without a server
// (in-process, under the storage lock) and with `cove serve` running (through its admin socket, sharing its
// fill engine with a concurrent skopeo pull); a preload SIGKILLed half way and run again; completeness proved
// by pulling from an offline Cove with the registry stopped.
import Foundation
import Testing

@Suite("Preload (CLI)", .serialized, .timeLimit(.minutes(4)))
struct PreloadTests {
    func blobPath(_ storage: String, _ digest: String) -> String {
        let hex = digest.split(separator: ":")[1]
        return storage + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
    }

    /// Registry GETs of blob `digest` so far.
    func blobGETs(_ f: Fixture, _ digest: String) -> Int {
        f.registryRequests("GET").filter { $0.contains("/blobs/\(digest) ") }.count
    }

    @Test("preload without a server: platforms, -f LIST, pins, re-run skips, failures; then an offline pull")
    func preloadInProcessThenPullOffline() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.pushAll()
        let server = try CoveServer(f, name: "preload")
        let single = f.image("single"), index = f.image("index"), dockerlist = f.image("dockerlist")
        let list = f.dir.appendingPathComponent("images.txt")
        try "# images for the air gap\n\n  dockerlist:v1   # a Docker manifest list\n".write(to: list, atomically: true, encoding: .utf8)

        // Every platform of dockerlist (-f LIST); `--platform` applies to every index of a run, so index gets its own.
        let r = try await server.command(["preload", "single:v1", "-f", list.path])
        #expect(r.status == 0, "\(r.summary)")
        #expect(r.stdoutText.contains("images: 2 done, 0 failed of 2"), "\(r.stdoutText)")
        #expect(r.stdoutText.contains("preload: \(f.registryHost)/single:v1 complete and pinned"), "plain log lines without a terminal: \(r.stdoutText)")
        let armOnly = try await server.command(["preload", "\(f.registryHost)/index:v1", "--platform", "linux/arm64"])
        #expect(armOnly.status == 0 && armOnly.stdoutText.contains("platforms linux/arm64"), "\(armOnly.summary)")
        let arm = try #require(index.manifests.first { $0.platform?.architecture == "arm64" })
        let amd = try #require(index.manifests.first { $0.platform?.architecture == "amd64" })
        for b in single.blobs + dockerlist.blobs + [arm.config] + arm.layers {
            #expect(FileManager.default.fileExists(atPath: blobPath(server.storage, b.digest)), "cached \(b.digest)")
            #expect(blobGETs(f, b.digest) == 1, "one registry GET for \(b.digest)")
        }
        for b in [amd.config] + amd.layers where !arm.layers.contains(b) { #expect(blobGETs(f, b.digest) == 0, "amd64 not fetched: \(b.digest)") }
        let ls = try await server.command(["ls"])
        let rows = ls.stdoutText.split(separator: "\n").dropFirst()
        #expect(rows.count == 3 && rows.allSatisfy { $0.hasSuffix("yes") }, "every image pinned:\n\(ls.stdoutText)")
        #expect(try await server.command(["verify"]).status == 0)

        // Again: nothing is fetched; every blob is reported as already cached.
        let dockerArm = try #require(dockerlist.manifests.first { $0.platform?.architecture == "arm64" })
        let blobCount = single.blobs.count + 1 + dockerArm.layers.count + 1 + arm.layers.count
        let again = try await server.command(["preload", "single:v1", "\(f.registryHost)/index:v1", "--platform", "linux/arm64", "-f", list.path])
        // (dockerlist: only its arm64 manifest is asked for this time, and that is cached.)
        #expect(again.status == 0 && again.stdoutText.contains("(0 fetched, \(blobCount) already cached)"), "\(again.stdoutText)")
        for b in single.blobs { #expect(blobGETs(f, b.digest) == 1) }

        // Bad names, unknown images and a platform the index lacks: exit 1, each error listed, the rest done.
        let bad = try await server.command(["preload", "Not A Name", "nothing:v1", "index:v1", "--platform", "linux/s390x"])
        #expect(bad.status == 1, "\(bad.summary)")
        #expect(bad.stdoutText.contains("FAILED  Not A Name: NAME_INVALID"), "\(bad.stdoutText)")
        #expect(bad.stdoutText.contains("nothing:v1: MANIFEST_UNKNOWN"), "\(bad.stdoutText)")
        #expect(bad.stdoutText.contains("linux/s390x") && bad.stdoutText.contains("images: 0 done, 3 failed of 3"), "\(bad.stdoutText)")
        let usage = try await server.command(["preload"])
        #expect(usage.status != 0 && usage.stderrText.contains("-f LIST"), "\(usage.summary)")

        // Completeness: the registry stops; an offline Cove on the same storage serves every preloaded image.
        f.stopRegistry()
        try (try String(contentsOfFile: server.configPath, encoding: .utf8) + "offline: true\n")
            .write(toFile: server.configPath, atomically: true, encoding: .utf8)
        let offline = try await server.command(["preload", "single:v1"])
        #expect(offline.status == 2 && offline.stderrText.contains("offline"), "\(offline.summary)")
        try await server.start()
        defer { server.process?.stop() }
        for (name, extra) in [("single", ["--all"]), ("dockerlist", ["--all"]), ("index", ["--override-arch", "arm64", "--override-os", "linux"])] {
            let dest = f.dir.appendingPathComponent("offline-\(name)")
            let pull = try await skopeo(["copy"] + extra + ["--src-tls-verify=false", "--retry-times", "0",
                                                           "docker://127.0.0.1:\(server.port)/\(name):v1", "oci:\(dest.path):pulled"], authFile: f.authFile)
            #expect(pull.succeeded, "offline pull of \(name):\n\(pull.summary)\n\(server.process?.logTail() ?? "")")
        }
    }

    @Test("preload through a running server shares its fills with a concurrent pull")
    func preloadThroughTheServer() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.pushAll()
        let server = try CoveServer(f, name: "served")
        try await server.start()
        defer { server.process?.stop() }
        let index = f.image("index")
        let dest = f.dir.appendingPathComponent("pull-index")
        async let pull = skopeo(["copy", "--all", "--src-tls-verify=false", "--retry-times", "0",
                                 "docker://127.0.0.1:\(server.port)/index:v1", "oci:\(dest.path):pulled"], authFile: f.authFile)
        let r = try await server.command(["preload", "index:v1", "dockerlist:v1"])
        #expect(r.status == 0, "\(r.summary)\n\(server.process?.logTail() ?? "")")
        #expect(r.stdoutText.contains("running in the cove server on this storage"), "\(r.stdoutText)")
        #expect(r.stdoutText.contains("images: 2 done, 0 failed of 2"), "\(r.stdoutText)")
        #expect(try await pull.succeeded)
        for b in index.blobs + f.image("dockerlist").blobs { #expect(blobGETs(f, b.digest) == 1, "one registry GET for \(b.digest)") }
        let ls = try await server.command(["ls"])
        #expect(ls.stdoutText.split(separator: "\n").dropFirst().filter { $0.hasSuffix("yes") }.count == 2, "\(ls.stdoutText)")
        let bad = try await server.command(["preload", "nothing:v1"])
        #expect(bad.status == 1 && bad.stdoutText.contains("MANIFEST_UNKNOWN"), "\(bad.summary)")
    }

    @Test("a preload killed half way, run again, fetches only what had not verified")
    func killedPreloadResumes() async throws {
        let f = try await Fixture(mode: .plain, blobSize: 24 << 20)
        defer { f.shutdown() }
        try await f.push("single")
        try await f.push("big")
        let single = f.image("single"), big = f.image("big")
        let layer = try #require(big.blobs.max { $0.size < $1.size })
        let port = try freePort()
        // A slow link (8 MiB/s): the big layer takes about 3 s, so the kill lands in its transfer.
        let proxy = try ProcessHandle(name: "slow-proxy", executable: "python3",
                                      arguments: [fixturesDirectory().appendingPathComponent("http_proxy.py").path, "--port", String(port), "--rate", String(8 << 20)],
                                      logDirectory: f.logDirectory)
        defer { proxy.stop() }
        try await waitForHTTP("http://127.0.0.1:\(port)/", timeout: 20, process: proxy)
        let server = try CoveServer(f, name: "resume")
        let first = try ProcessHandle(name: "preload-1", executable: try coveBinary(),
                                      arguments: ["preload", "single:v1", "big:v1", "--parallelism", "1", "--config", server.configPath],
                                      environment: ["http_proxy": "http://127.0.0.1:\(port)", "NO_PROXY": "", "no_proxy": ""],
                                      logDirectory: f.logDirectory, maxLifetime: 120)
        defer { first.stop() }
        let committed = (single.blobs + big.blobs.filter { $0.digest != layer.digest }).map(\.digest)
        var inFlight = false
        for _ in 0..<600 where first.isRunning {
            let tmp = (try? FileManager.default.contentsOfDirectory(atPath: server.storage + "/tmp")) ?? []
            if committed.allSatisfy({ FileManager.default.fileExists(atPath: blobPath(server.storage, $0)) }), !tmp.isEmpty {
                inFlight = true
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(inFlight, "the big layer was never seen in flight: \(first.logTail())")
        first.crash()
        #expect(!FileManager.default.fileExists(atPath: blobPath(server.storage, layer.digest)), "the kill came too late")
        // The image completed before the kill is pinned; the half one is not.
        let half = try await server.command(["ls"]).stdoutText
        #expect(half.split(separator: "\n").contains { $0.contains("/single") && $0.hasSuffix("yes") }, "\(half)")
        #expect(half.split(separator: "\n").contains { $0.contains("/big") && $0.hasSuffix("no") }, "\(half)")

        let second = try await server.command(["preload", "single:v1", "big:v1"])
        #expect(second.status == 0, "\(second.summary)")
        #expect(second.stdoutText.contains("(1 fetched, \(committed.count) already cached)"), "\(second.stdoutText)")
        for d in committed { #expect(blobGETs(f, d) == 1, "committed before the kill, not fetched again: \(d)") }
        // The registry logs the killed run's GET only when that transfer ends, which can be after the second run.
        for _ in 0..<100 where blobGETs(f, layer.digest) < 2 { try await Task.sleep(for: .milliseconds(100)) }
        #expect(blobGETs(f, layer.digest) == 2)
        #expect(server.tmpFiles().isEmpty)
        #expect(try await server.command(["verify"]).status == 0)
        let ls = try await server.command(["ls"])
        #expect(ls.stdoutText.split(separator: "\n").dropFirst().filter { $0.hasSuffix("yes") }.count == 2, "\(ls.stdoutText)")
    }
}
