// `cove verify`, `cove stats`, `cove ls` as an operator runs them: the real binary, against a storage a real
// `cove serve` filled from a real registry, with the server running (admin socket) and stopped (in-process).
import Foundation
import Testing

@Suite("Admin commands (CLI)", .serialized, .timeLimit(.minutes(3)))
struct AdminCommandLineTests {
    @Test("verify, stats and ls through a running server's admin socket and without a server")
    func commandsBothWays() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single", to: "team/app")
        let image = f.image("single")
        let server = try CoveServer(f, name: "admin")
        try await server.start()
        let accept = "Accept: \(image.mediaType)"
        #expect(try await httpRequest("GET", "\(server.url)/v2/team/app/manifests/v1", headers: [accept]).status == 200)
        for b in image.blobs { #expect(try await httpRequest("GET", "\(server.url)/v2/team/app/blobs/\(b.digest)").status == 200) }
        #expect(try await httpRequest("GET", "\(server.url)/v2/team/app/blobs/\(image.blobs[0].digest)").status == 200)  // a hit
        let total = image.size + image.blobs.reduce(0) { $0 + $1.size }

        // Through the socket.
        var st = stat()
        #expect(lstat(server.storage + "/admin.sock", &st) == 0 && (st.st_mode & 0o777) == 0o600)
        let stats = try await server.command(["stats"])
        #expect(stats.status == 0, "\(stats.summary)")
        func field(_ text: String, _ label: String) -> String {
            let line = text.split(separator: "\n").first { $0.hasPrefix(label + ":") } ?? ""
            return line.dropFirst(label.count + 1).trimmingCharacters(in: .whitespaces)
        }
        #expect(field(stats.stdoutText, "blobs") == "\(image.blobs.count + 1)", "\(stats.stdoutText)")
        #expect(field(stats.stdoutText, "bytes").hasPrefix("\(total) ("))
        #expect(field(stats.stdoutText, "limit") == "none")
        #expect(field(stats.stdoutText, "hit ratio").contains("(1 hits, \(image.blobs.count + 1) misses"), "\(stats.stdoutText)")
        #expect(field(stats.stdoutText, "evictions") == "0 (0 B)")
        #expect(field(stats.stdoutText, "reconciliation").hasPrefix("done"))
        let ls = try await server.command(["ls"])
        #expect(ls.status == 0)
        let lines = ls.stdoutText.split(separator: "\n")
        #expect(lines.first?.hasPrefix("REPOSITORY") == true && lines.first?.hasSuffix("PINNED") == true)
        #expect(lines.count == 2 && lines[1].contains("/team/app") && lines[1].hasSuffix("no"), "\(ls.stdoutText)")
        let lsRepo = try await server.command(["ls", "team/app"])
        #expect(lsRepo.status == 0 && lsRepo.stdoutText.contains("v1") && lsRepo.stdoutText.contains(image.digest), "\(lsRepo.stdoutText)")
        #expect(try await server.command(["ls", "team/nothing"]).status == 1)
        let (ok, okReport) = try await server.verify()
        #expect(ok.status == 0 && okReport.findings.isEmpty && okReport.checkedRows == image.blobs.count + 1)

        // A flipped byte and a missing file, found through the socket.
        let layer = image.blobs.max { $0.size < $1.size }!, config = image.blobs.min { $0.size < $1.size }!
        let layerPath = server.storage + "/blobs/sha256/\(layer.digest.dropFirst(7).prefix(2))/\(layer.digest.dropFirst(7))"
        let configPath = server.storage + "/blobs/sha256/\(config.digest.dropFirst(7).prefix(2))/\(config.digest.dropFirst(7))"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: layerPath))
        bytes[bytes.count / 2] ^= 0x80
        try bytes.write(to: URL(fileURLWithPath: layerPath))
        try FileManager.default.removeItem(atPath: configPath)
        let bad = try await server.command(["verify"])
        #expect(bad.status == 1)
        #expect(bad.stdoutText.contains("MISMATCH\t\(layer.digest)") && bad.stdoutText.contains("MISSING\t\(config.digest)"), "\(bad.stdoutText)")
        let (repaired, repairedReport) = try await server.verify(repair: true)
        #expect(repaired.status == 1 && repairedReport.findings.count == 2 && repairedReport.findings.allSatisfy(\.repaired))
        #expect(try await server.verify().0.status == 0)
        // The server fetches them again.
        #expect(try await httpRequest("GET", "\(server.url)/v2/team/app/blobs/\(layer.digest)").status == 200)

        // Without a server: the socket is gone, the commands run in-process with the same answers.
        server.process?.stop()
        #expect(!FileManager.default.fileExists(atPath: server.storage + "/admin.sock"))
        let offlineStats = try await server.command(["stats"])
        #expect(offlineStats.status == 0 && field(offlineStats.stdoutText, "hit ratio").contains("hits,")
                && field(offlineStats.stdoutText, "server") == "not running", "\(offlineStats.summary)")
        let offlineLs = try await server.command(["ls", "team/app"])
        #expect(offlineLs.status == 0 && offlineLs.stdoutText.contains(image.digest), "\(offlineLs.summary)")
        let (clean, _) = try await server.verify()
        #expect(clean.status == 0, "\(clean.summary)")
        var again = try Data(contentsOf: URL(fileURLWithPath: layerPath))
        again[0] ^= 0x01
        try again.write(to: URL(fileURLWithPath: layerPath))
        let offlineBad = try await server.command(["verify"])
        #expect(offlineBad.status == 1 && offlineBad.stdoutText.contains("MISMATCH\t\(layer.digest)"), "\(offlineBad.summary)")
        #expect(try await server.command(["verify", "--repair"]).status == 1)
        #expect(try await server.command(["verify"]).status == 0)
        // A storage that does not exist is an error (2), not an empty cache.
        let missing = try await runCommand(try coveBinary(), ["stats", "--storage", f.dir.appendingPathComponent("nowhere").path], timeout: 30)
        #expect(missing.status == 2 && missing.stderrText.contains("does not exist"))
    }
}

/// A mistyped `--storage` must not turn an unrelated directory into a cache or delete anything in it.
@Suite("Storage path checks")
struct StoragePathTests {
    @Test func anUnrelatedDirectoryIsRefusedAndLeftAlone() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-notstorage-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("tmp"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "important".write(to: dir.appendingPathComponent("tmp/user-data.txt"), atomically: true, encoding: .utf8)
        let bin = try coveBinary()
        for args in [["stats"], ["verify", "--repair"], ["ls"], ["gc"]] {
            let r = try await runCommand(bin, args + ["--storage", dir.path], timeout: 30)
            #expect(r.status == 2 && r.stderrText.contains("not a Cove storage"), "\(args): \(r.summary)")
        }
        let serve = try await runCommand(bin, ["serve", "--listen", "127.0.0.1:0", "--storage", dir.path], timeout: 30)
        #expect(serve.status != 0 && serve.stderrText.contains("holds no Cove cache"), "\(serve.summary)")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("tmp/user-data.txt").path))
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("index.sqlite").path))
        let export = try await runCommand(bin, ["export", "--storage", dir.path, "-o", dir.path + "/out.tar", "a:v1"], timeout: 30)
        #expect(export.status != 0 && export.stderrText.contains("not a Cove storage"), "\(export.summary)")
        let preload = try await runCommand(bin, ["preload", "--storage", dir.path, "--upstream", "http://127.0.0.1:9", "a:v1"], timeout: 30)
        #expect(preload.status != 0 && preload.stderrText.contains("holds no Cove cache"), "\(preload.summary)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("index.sqlite").path))
        let file = dir.appendingPathComponent("tmp/user-data.txt").path
        let onFile = try await runCommand(bin, ["stats", "--storage", file], timeout: 30)
        #expect(onFile.status == 2 && onFile.stderrText.contains("is a file"), "\(onFile.summary)")
    }

    /// A fresh file system mounted at the storage path (a Kubernetes volume, a dedicated disk) holds only
    /// `lost+found`: that is an empty storage, which `serve` adopts without touching `lost+found`.
    @Test func aFreshFileSystemWithLostAndFoundIsAdopted() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-fresh-fs-\(UUID().uuidString.prefix(8))")
        let lostFound = dir.appendingPathComponent("lost+found")
        try FileManager.default.createDirectory(at: lostFound, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try "fsck leftovers".write(to: lostFound.appendingPathComponent("#12"), atomically: true, encoding: .utf8)
        // Logs outside the storage: anything else in it would make it non-empty.
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("cove-fresh-fs-logs-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: logs) }
        let port = try freePort()
        let serve = try ProcessHandle(name: "cove-fresh-fs", executable: try coveBinary(),
                                      arguments: ["serve", "--listen", "127.0.0.1:\(port)", "--storage", dir.path,
                                                  "--upstream", "http://127.0.0.1:9"],
                                      logDirectory: logs, maxLifetime: 120)
        defer { serve.stop() }
        try await waitForHTTP("http://127.0.0.1:\(port)/v2/", timeout: 60, expectStatus: 200, process: serve)
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("index.sqlite").path))
        #expect((try? String(contentsOf: lostFound.appendingPathComponent("#12"), encoding: .utf8)) == "fsck leftovers")
        // Anything besides lost+found is still refused.
        let other = FileManager.default.temporaryDirectory.appendingPathComponent("cove-notfresh-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: other.appendingPathComponent("lost+found"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: other) }
        try "x".write(to: other.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        let refused = try await runCommand(try coveBinary(), ["serve", "--listen", "127.0.0.1:0", "--storage", other.path], timeout: 30)
        #expect(refused.status != 0 && refused.stderrText.contains("holds no Cove cache"), "\(refused.summary)")
    }
}
