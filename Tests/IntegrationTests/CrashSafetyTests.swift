// Crash safety (issue 8): a real `cove serve` in front of a real registry is SIGKILLed at random moments while
// it fills blobs and commits manifests and tags, then restarted on the same storage. Invariants, checked with
// `cove verify` and independently (directory listing, sha256sum, Python's sqlite3):
// - right after the kill, before any restart: no index row without its file, no file with wrong bytes
//   (orphans and temp files may exist: that is what start-up cleans);
// - after the restart: no temp files, and once start-up reconciliation ran, nothing at all (`verify` exit 0),
//   every row has its file with the right hash, every file has its row;
// - pulls still work.
import Foundation
import Testing

@Suite("Crash safety", .serialized, .timeLimit(.minutes(4)))
struct CrashSafetyTests {
    static let iterations = 12
    static let blobsPerIteration = 3

    @Test("SIGKILL during fills and commits leaves a consistent cache after restart")
    func sigkillDuringFillsAndCommits() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single", to: "crash/app")
        let image = f.image("single")
        // Blobs of 1–12 MiB, each requested in exactly one iteration, so every iteration has fills to cut.
        var blobs: [String] = []
        for _ in 0..<(Self.iterations * Self.blobsPerIteration) {
            blobs.append(try await uploadBlob(f, repository: "crash/app", try randomData(Int.random(in: 1...12) << 20)))
        }
        let server = try CoveServer(f, name: "crash")
        var killedDuringFill = 0

        for iteration in 0..<Self.iterations {
            try await server.start()
            #expect(server.tmpFiles().isEmpty, "iteration \(iteration): temp files survived a restart: \(server.tmpFiles())")
            let (live, liveReport) = try await server.verify()
            #expect(live.status == 0, "iteration \(iteration): verify after restart:\n\(live.summary)\n\(server.process?.logTail() ?? "")")
            #expect(liveReport.findings.isEmpty)

            // Load: new blobs (fills → commit → row), the image's manifest by a tag and by digest, cached blobs.
            let mine = blobs[(iteration * Self.blobsPerIteration)..<((iteration + 1) * Self.blobsPerIteration)]
            var urls = mine.map { "\(server.url)/v2/crash/app/blobs/\($0)" }
            urls.append("\(server.url)/v2/crash/app/manifests/v1")
            urls.append("\(server.url)/v2/crash/app/manifests/\(image.digest)")
            urls += image.blobs.map { "\(server.url)/v2/crash/app/blobs/\($0.digest)" }
            let clients = urls.map { url in
                Task { try? await runCommand("curl", ["-s", "-o", "/dev/null", "--max-time", "20", "--noproxy", "*",
                                                      "-H", "Accept: \(image.mediaType)", url], timeout: 30) }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 10...250)))
            if !server.tmpFiles().isEmpty { killedDuringFill += 1 }
            server.process?.crash()
            for c in clients { _ = await c.value }

            // Before any restart: what the dead server left must never be visible as cached.
            let (dead, deadReport) = try await server.verify()
            #expect(dead.status == 0 || dead.status == 1, "iteration \(iteration):\n\(dead.summary)")
            let visible = deadReport.findings.filter { $0.kind == "mismatch" || $0.kind == "missing" || $0.kind == "unreadable" }
            #expect(visible.isEmpty, "iteration \(iteration): a crash left a visible bad entry: \(visible)")
            trace("crash test iteration \(iteration): after the kill verify found \(deadReport.kinds())")
        }

        // Final restart: reconciliation, verify, independent checks, and pulls.
        try await server.start()
        #expect(server.tmpFiles().isEmpty)
        let (final, finalReport) = try await server.verify()
        #expect(final.status == 0, "final verify:\n\(final.summary)")
        #expect(finalReport.findings.isEmpty)
        let files = server.blobFiles()
        let rows = try await server.indexedDigests()
        #expect(files.map { "sha256:" + ($0.split(separator: "/").last.map(String.init) ?? "") }.sorted() == rows,
                "files and rows differ:\nfiles \(files)\nrows \(rows)")
        let manifests = Set(image.allManifests.map(\.digest))
        for file in files where !manifests.contains("sha256:" + (file.split(separator: "/").last.map(String.init) ?? "")) {
            let actual = try await sha256DigestOfFile(URL(fileURLWithPath: server.storage + "/blobs/" + file))
            #expect(file.hasSuffix(actual.dropFirst(7)), "\(file) holds \(actual)")
        }
        for digest in blobs.prefix(4) + image.blobs.map(\.digest) {
            let dest = f.dir.appendingPathComponent("final-\(digest.suffix(12))")
            let r = try await httpRequest("GET", "\(server.url)/v2/crash/app/blobs/\(digest)", saveBodyTo: dest, timeout: 60)
            #expect(r.status == 200)
            #expect(try await sha256DigestOfFile(dest) == digest)
        }
        let manifest = try await httpRequest("GET", "\(server.url)/v2/crash/app/manifests/v1", headers: ["Accept: \(image.mediaType)"])
        #expect(manifest.status == 200 && sha256Digest(manifest.body) == image.digest)
        server.process?.stop()
        #expect(!FileManager.default.fileExists(atPath: server.storage + "/admin.sock"))
        // Not an assertion (timing decides), but worth seeing when the test is tuned.
        trace("crash test: \(killedDuringFill) of \(Self.iterations) kills hit fills in flight")
    }

    /// The same kill, while a cache budget far below the load keeps eviction running: every fill's commit
    /// pushes the cache over `max_size`, so the kills land in fills, commits and evictions alike.
    @Test("SIGKILL during evictions leaves a consistent cache after restart")
    func sigkillDuringEvictions() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        var blobs: [String] = []
        for _ in 0..<24 { blobs.append(try await uploadBlob(f, repository: "evict/app", try randomData(Int.random(in: 1...6) << 20))) }
        let server = try CoveServer(f, name: "evict-crash", extraYAML: "cache:\n  max_size: 8MiB\n  min_free: 0\n  eviction_grace: 0s\n")
        for iteration in 0..<8 {
            try await server.start()
            #expect(server.tmpFiles().isEmpty, "iteration \(iteration): temp files survived a restart")
            let (live, report) = try await server.verify()
            #expect(live.status == 0 && report.findings.isEmpty, "iteration \(iteration): verify after restart:\n\(live.summary)")
            let mine = blobs[(iteration * 3)..<(iteration * 3 + 3)]
            let clients = mine.map { digest in
                Task { try? await runCommand("curl", ["-s", "-o", "/dev/null", "--max-time", "20", "--noproxy", "*",
                                                      "\(server.url)/v2/evict/app/blobs/\(digest)"], timeout: 30) }
            }
            try await Task.sleep(for: .milliseconds(Int.random(in: 50...400)))
            server.process?.crash()
            for c in clients { _ = await c.value }
            let (dead, deadReport) = try await server.verify()
            let visible = deadReport.findings.filter { $0.kind == "mismatch" || $0.kind == "missing" || $0.kind == "unreadable" }
            #expect(visible.isEmpty, "iteration \(iteration): a crash left a visible bad entry: \(visible)\n\(dead.summary)")
        }
        try await server.start()
        let (final, finalReport) = try await server.verify()
        #expect(final.status == 0 && finalReport.findings.isEmpty, "final verify:\n\(final.summary)")
        // The budget held: what is cached fits (plus at most the blob whose fill crossed it last).
        let files = server.blobFiles()
        var bytes: Int64 = 0
        for file in files {
            bytes += Int64((try? FileManager.default.attributesOfItem(atPath: server.storage + "/blobs/" + file)[.size] as? NSNumber)??.int64Value ?? 0)
        }
        #expect(bytes <= (8 + 6) << 20, "cached \(bytes) bytes under an 8 MiB budget")
        #expect(try await server.indexedDigests() == files.map { "sha256:" + ($0.split(separator: "/").last.map(String.init) ?? "") }.sorted())
        // Evictions really ran (so some kills landed around them).
        let stats = try await server.command(["stats", "--json"])
        let evictions = ((try? JSONSerialization.jsonObject(with: stats.stdout)) as? [String: Any])?["evictions"] as? Int ?? 0
        #expect(evictions > 0, "no eviction ran: \(stats.summary)")
        server.process?.stop()
    }
}
