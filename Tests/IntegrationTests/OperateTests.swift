// Operating the real `cove serve` binary: /metrics after real skopeo pulls, JSON logs, /readyz, the status
// page, and a graceful SIGTERM in the middle of a slow blob download.
import Foundation
import Testing

@Suite("Operating the cove binary", .serialized, .timeLimit(.minutes(5)))
struct OperateTests {
    /// The sample of `name` whose labels include every pair in `labels`, from a Prometheus text scrape.
    static func sample(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            let series = line[..<line.lastIndex(of: " ")!]
            guard labels.allSatisfy({ series.contains("\($0.key)=\"\($0.value)\"") }) else { continue }
            return Double(line[line.index(after: line.lastIndex(of: " ")!)...])
        }
        return nil
    }

    func pull(_ f: Fixture, _ cove: CoveHandle, _ repo: String, into name: String) async throws -> CommandResult {
        let dest = f.dir.appendingPathComponent("pulls/\(name)")
        try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
        return try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                 "docker://\(cove.host)/\(repo):v1", "oci:\(dest.path):pulled"])
    }

    @Test("/metrics after a cold and a warm skopeo pull: misses then hits, upstream bytes once, cache bytes served; JSON access log")
    func metricsColdThenWarm() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single")
        let image = f.image("single")
        let cove = try await f.startCove(extraYAML: "log_format: json")
        let blobBytes = Double(image.blobs.map(\.size).reduce(0, +))

        let cold = try await pull(f, cove, "single", into: "cold")
        #expect(cold.succeeded, "\(cold.summary)\n\(cove.logTail())")
        // Fills commit just after their last byte went out: give the counters a moment.
        var text = ""
        for _ in 0..<100 {
            text = try await httpRequest("GET", "\(cove.url)/metrics").bodyText
            if Self.sample(text, "cove_fills_total", ["outcome": "verified"]) == Double(image.blobs.count) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(Self.sample(text, "cove_fills_total", ["outcome": "verified"]) == Double(image.blobs.count), "\(text)")
        #expect(Self.sample(text, "cove_cache_requests_total", ["kind": "blob", "outcome": "miss"]) == Double(image.blobs.count))
        #expect(Self.sample(text, "cove_cache_requests_total", ["kind": "blob", "outcome": "hit"]) == 0)
        #expect((Self.sample(text, "cove_cache_requests_total", ["kind": "manifest", "outcome": "miss"]) ?? 0) >= 1)
        #expect(Self.sample(text, "cove_upstream_received_bytes_total", ["kind": "blob"]) == blobBytes)
        #expect(Self.sample(text, "cove_cache_served_bytes_total") == 0)

        let warm = try await pull(f, cove, "single", into: "warm")
        #expect(warm.succeeded, "\(warm.summary)")
        for _ in 0..<50 {
            text = try await httpRequest("GET", "\(cove.url)/metrics").bodyText
            if (Self.sample(text, "cove_cache_served_bytes_total") ?? 0) >= blobBytes { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(Self.sample(text, "cove_cache_requests_total", ["kind": "blob", "outcome": "hit"]) == Double(image.blobs.count), "\(text)")
        #expect(Self.sample(text, "cove_upstream_received_bytes_total", ["kind": "blob"]) == blobBytes, "upstream bytes counted once")
        #expect((Self.sample(text, "cove_cache_served_bytes_total") ?? 0) >= blobBytes)
        #expect(f.registryRequests("GET").filter { $0.contains("/blobs/") }.count == image.blobs.count)

        // Readiness, health, the status page.
        #expect(try await httpRequest("GET", "\(cove.url)/readyz").status == 200)
        #expect(try await httpRequest("GET", "\(cove.url)/healthz").status == 200)
        let page = try await httpRequest("GET", "\(cove.url)/")
        #expect(page.status == 200 && page.bodyText.contains("/single</code>"), "\(page.bodyText)")

        // JSON logs: every stderr line is one object; the access lines carry the cache outcome.
        let lines = cove.process.stderr.split(separator: "\n")
        #expect(!lines.isEmpty)
        var outcomes: [String] = []
        for line in lines {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                Issue.record("not a JSON line: \(line)")
                continue
            }
            #expect(object["timestamp"] is String && object["level"] is String && object["label"] is String && object["message"] is String)
            let message = object["message"] as? String ?? ""
            if message.hasPrefix("GET /v2/single/blobs/"), let metadata = object["metadata"] as? [String: String] {
                outcomes.append(metadata["cache"] ?? "?")
            }
            #expect(!message.contains("/healthz") && !message.contains("/readyz"))
        }
        #expect(outcomes.filter { $0 == "miss" || $0 == "fill-join" }.count == image.blobs.count, "\(outcomes)")
        #expect(outcomes.filter { $0 == "hit" }.count == image.blobs.count, "\(outcomes)")
    }

    @Test("SIGTERM during a slow cold blob download: the download completes byte-exact, new connections are refused, the fill is committed, exit 0")
    func gracefulShutdownMidDownload() async throws {
        let size = 16 << 20
        let f = try await Fixture(mode: .plain, blobSize: size)
        defer { f.shutdown() }
        try await f.push("big")
        let layer = try #require(f.image("big").blobs.first { $0.size == size })
        // A slow link (4 MiB/s) between Cove and the registry: the layer takes about 4 s.
        let proxyPort = try freePort()
        let proxy = try ProcessHandle(name: "slow-proxy", executable: "python3",
                                      arguments: [fixturesDirectory().appendingPathComponent("http_proxy.py").path, "--port", String(proxyPort), "--rate", String(4 << 20)],
                                      logDirectory: f.logDirectory)
        defer { proxy.stop() }
        try await waitForHTTP("http://127.0.0.1:\(proxyPort)/", timeout: 20, process: proxy)
        let server = try CoveServer(f, name: "sigterm", extraYAML: "shutdown_timeout: 25s")
        let cove = try await server.start(environment: ["http_proxy": "http://127.0.0.1:\(proxyPort)", "NO_PROXY": "", "no_proxy": ""])

        let output = f.dir.appendingPathComponent("layer.bin")
        let download = try ProcessHandle(name: "slow-download", executable: "curl",
                                         arguments: ["-s", "-f", "-o", output.path, "--max-time", "60", "\(server.url)/v2/big/blobs/\(layer.digest)"],
                                         logDirectory: f.logDirectory, maxLifetime: 90)
        defer { download.stop() }
        // Wait until bytes flow (the fill's temp file exists and the client has some of it).
        var flowing = false
        for _ in 0..<300 {
            let got = (try? FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
            if got > 0, !server.tmpFiles().isEmpty { flowing = true; break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(flowing, "the download never started: \(cove.logTail())")
        cove.signal(SIGTERM)

        // The listener closes: a new connection is refused while the download still runs.
        var refused = false
        for _ in 0..<100 {
            let probe = try await runCommand("curl", ["-s", "-o", "/dev/null", "--max-time", "2", "\(server.url)/v2/"], timeout: 5)
            if probe.status == 7 { refused = true; break }  // curl: failed to connect
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(refused, "new connections were still accepted after SIGTERM")
        #expect(download.isRunning, "the download ended before the listener closed; the link is too fast for this test")

        // The download completes byte-exact.
        for _ in 0..<600 where download.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(download.exitStatus == 0, "\(download.logTail())\n\(cove.logTail())")
        #expect(try await sha256DigestOfFile(output) == layer.digest)
        // Cove exits 0 after the fill committed.
        for _ in 0..<400 where cove.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        #expect(cove.exitStatus == 0, "\(cove.logTail())")
        #expect(cove.stderr.contains("shutting down"))
        #expect(cove.stderr.contains("blob cached"), "\(cove.logTail())")
        #expect(FileManager.default.fileExists(atPath: server.storage + "/blobs/sha256/\(layer.digest.dropFirst(7).prefix(2))/\(layer.digest.dropFirst(7))"))

        // The committed layer is served offline by the next Cove (started with the log flags: JSON, notice and up).
        let again = try await server.start(offline: true, arguments: ["--log-format", "json", "--log-level", "notice"])
        defer { again.stop() }
        let r = try await httpRequest("HEAD", "\(server.url)/v2/big/blobs/\(layer.digest)")
        #expect(r.status == 200)
        again.stop()
        let lines = again.stderr.split(separator: "\n")
        #expect(lines.contains { $0.contains("cove listening") } && lines.contains { $0.contains("cove stopped") }, "\(again.logTail())")
        for line in lines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON line: \(line)")
            #expect(!["trace", "debug", "info"].contains(object?["level"] as? String ?? ""), "below --log-level notice: \(line)")
        }
    }
}
