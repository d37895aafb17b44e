import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Cached blobs go to the socket with sendfile(2) (`BlobSendfile`, through `SendfileHTTP1Channel`): byte-exact,
/// ranges included, framed correctly among other responses on one connection, counted in the access log and
/// `/metrics`, and a client hanging up mid-body neither crashes Cove nor keeps the blob's lease. Connections
/// without the sendfile channel (what TLS listeners use) keep the `pread` path.
@Suite("Zero-copy blob serving (sendfile)")
struct SendfileTests {
    /// The sendfile region size the tests straddle (`BlobSendfile.regionSize`).
    static let region = 2 << 20

    /// `count` bytes that do not repeat at any power-of-two period: a random block of a prime length, each copy
    /// stamped with its index, so an offset error anywhere shows as different bytes.
    static func content(_ count: Int) -> [UInt8] {
        let block = FaultUpstream.randomBytes(1_000_003)
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var copy: UInt32 = 0
        while out.count < count {
            let start = out.count
            out.append(contentsOf: block.prefix(count - out.count))
            withUnsafeBytes(of: copy.littleEndian) { stamp in
                for (i, b) in stamp.enumerated() where start + i < out.count { out[start + i] = b }
            }
            copy += 1
        }
        return out
    }

    /// GETs each blob once (a fill: its reader sends what the fill wrote by sendfile too, the newest bytes from
    /// memory) and waits until it is committed, so the next GET is a warm hit.
    static func warm(_ cove: InProcessCove, _ blobs: [(Digest, [UInt8])], repository: String = "a") async throws {
        for (digest, bytes) in blobs {
            #expect(try await curl("\(cove.url)/v2/\(repository)/blobs/\(digest)", maxTime: 120).body == bytes)
            #expect(await eventually(30) { cove.isCached(digest.description) })
        }
    }

    static func sendfileBytes(_ cove: InProcessCove) async throws -> Double {
        try await MetricsTests.scrape(cove).value("cove_cache_sendfile_bytes_total") ?? -1
    }

    /// Polls the status page's fill progress (bytes received) for at most 30 seconds.
    static func fillReceived(_ cove: InProcessCove, atLeast bytes: Int64) async throws -> Bool {
        for _ in 0..<1500 {
            if let fill = await cove.mirror.status().fills.first, fill.bytes >= bytes { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Access lines (info) whose message starts with `prefix`.
    static func accessLines(_ logs: LogCapture, _ prefix: String) -> [LogCapture.Record] {
        logs.all.filter { $0.level == .info && $0.message.hasPrefix(prefix) }
    }

    @Test func aWarmBlobGoesOutBySendfileByteExactAndIsCounted() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        // Two regions: a whole one and an odd tail.
        let bytes = Self.content(Self.region + 1_000_003 + 17)
        let digest = up.addBlob(bytes)
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                           logs: logs)
        defer { cove.stop() }
        try await Self.warm(cove, [(digest, bytes)])
        let afterFill = try await Self.sendfileBytes(cove)
        #expect(afterFill >= 0 && afterFill <= Double(bytes.count))

        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)", maxTime: 120)
        #expect(r.exitCode == 0 && r.status == 200)
        #expect(r.headers["content-length"] == "\(bytes.count)")
        #expect(r.body.count == bytes.count)
        #expect(r.body == bytes)
        #expect(try await Self.sendfileBytes(cove) == afterFill + Double(bytes.count))
        #expect(try await MetricsTests.scrape(cove).value("cove_cache_served_bytes_total") == Double(bytes.count))
        // The access line of the hit counts the bytes sendfile sent.
        let path = "/v2/a/blobs/\(digest)"
        var lines: [LogCapture.Record] = []
        #expect(await eventually(20) { lines = Self.accessLines(logs, "GET \(path) 200"); return lines.count == 2 })
        #expect(lines.last?.metadata["cache"] == "hit")
        #expect(lines.allSatisfy { $0.metadata["bytes"] == "\(bytes.count)" && $0.metadata["aborted"] == nil }, "\(lines.map(\.text))")
        #expect(up.count("GET", "/blobs/") == 1)
    }

    @Test func rangesGoByTheSameZeroCopyPath() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let n = Self.region + 4321
        let bytes = Self.content(n)
        let digest = up.addBlob(bytes)
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                           logs: logs)
        defer { cove.stop() }
        try await Self.warm(cove, [(digest, bytes)])
        let afterFill = try await Self.sendfileBytes(cove)
        let cases: [(header: String, first: Int, last: Int)] = [
            ("bytes=0-0", 0, 0),                                                              // first byte
            ("bytes=1000-2999", 1000, 2999),                                                  // middle
            ("bytes=\(Self.region - 100)-\(Self.region + 99)", Self.region - 100, Self.region + 99),  // across a region edge
            ("bytes=\(Self.region - 7)-", Self.region - 7, n - 1),                            // to the end, across the edge
            ("bytes=\(n - 1)-\(n - 1)", n - 1, n - 1),                                        // last byte
            ("bytes=-1000", n - 1000, n - 1),                                                 // suffix
        ]
        var expected = 0
        for c in cases {
            let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)", headers: ["Range: \(c.header)"])
            #expect(r.exitCode == 0 && r.status == 206, "\(c.header)")
            #expect(r.headers["content-range"] == "bytes \(c.first)-\(c.last)/\(n)", "\(c.header)")
            #expect(r.headers["content-length"] == "\(c.last - c.first + 1)", "\(c.header)")
            #expect(r.body == Array(bytes[c.first...c.last]), "\(c.header)")
            expected += c.last - c.first + 1
        }
        #expect(try await Self.sendfileBytes(cove) == afterFill + Double(expected))
        let path = "/v2/a/blobs/\(digest)"
        var lines: [LogCapture.Record] = []
        #expect(await eventually(20) { lines = Self.accessLines(logs, "GET \(path) 206"); return lines.count == cases.count })
        let logged = lines.compactMap { $0.metadata["bytes"].flatMap { Int($0) } }.sorted()
        #expect(logged == cases.map { $0.last - $0.first + 1 }.sorted(), "\(lines.map(\.text))")
        // Unsatisfiable stays a 416 with the JSON envelope, nothing sent by sendfile.
        let bad = try await curl("\(cove.url)/v2/a/blobs/\(digest)", headers: ["Range: bytes=\(n)-"])
        #expect(bad.status == 416 && bad.headers["content-range"] == "bytes */\(n)")
        #expect(try await Self.sendfileBytes(cove) == afterFill + Double(expected))
    }

    /// Several responses on one connection, one after another and pipelined (all requests in one write): blobs by
    /// sendfile, a manifest (one buffer through Hummingbird's writer), a range and a HEAD between them. Any part
    /// out of order or a body a byte too long or short breaks the framing of every later response.
    @Test func keepAliveAndPipelinedResponsesStayFramed() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1", layers: 2, layerSize: 3 << 20)
        let big = Self.content(Self.region + 5000)
        let bigDigest = up.addBlob(big)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1", maxTime: 120).ok)
        #expect(await eventually(20) { image.blobs.allSatisfy { cove.isCached($0.0.description) } })
        try await Self.warm(cove, [(bigDigest, big)], repository: "team/app")
        let afterFill = try await Self.sendfileBytes(cove)
        let blobPath = { (d: Digest) in "/v2/team/app/blobs/\(d)" }
        typealias Step = (request: String, head: Bool, check: @Sendable (RawHTTPConnection.Response) -> Bool)
        let layer = image.layers[0], config = image.config, manifest = image.manifest
        let steps: [Step] = [
            (RawHTTPConnection.request(blobPath(image.layerDigests[0])), false, { $0.status == 200 && $0.body == layer }),
            (RawHTTPConnection.request("/v2/team/app/manifests/v1"), false, { $0.status == 200 && $0.body == manifest }),
            (RawHTTPConnection.request(blobPath(bigDigest), headers: ["Range: bytes=100-\(Self.region + 100)"]), false, {
                $0.status == 206 && $0.body == Array(big[100...(Self.region + 100)])
            }),
            (RawHTTPConnection.request(blobPath(bigDigest), method: "HEAD"), true, {
                $0.status == 200 && $0.body.isEmpty && $0.headers["content-length"] == "\(big.count)"
            }),
            (RawHTTPConnection.request(blobPath(image.configDigest)), false, { $0.status == 200 && $0.body == config }),
            (RawHTTPConnection.request("/v2/team/app/blobs/sha256:" + String(repeating: "0", count: 64)), false, { $0.status == 404 }),
            (RawHTTPConnection.request(blobPath(bigDigest)), false, { $0.status == 200 && $0.body == big }),
        ]
        let port = cove.server.port
        let sequential = try await onThread { () -> [Bool] in
            let connection = try RawHTTPConnection(port: port)
            return try steps.map { step in
                try connection.send(step.request)
                return step.check(try connection.readResponse(toHead: step.head))
            }
        }
        #expect(sequential == Array(repeating: true, count: steps.count), "one after another")
        let pipelined = try await onThread { () -> [Bool] in
            let connection = try RawHTTPConnection(port: port)
            try connection.send(steps.map(\.request).joined())
            return try steps.map { step in step.check(try connection.readResponse(toHead: step.head)) }
        }
        #expect(pipelined == Array(repeating: true, count: steps.count), "pipelined")
        let perRound = layer.count + (Self.region + 1) + config.count + big.count
        #expect(try await Self.sendfileBytes(cove) == afterFill + Double(2 * perRound))
    }

    /// A client that resets the connection in the middle of a sendfile body: the write fails, the response ends,
    /// its lease goes (the blob can be evicted), the access line says aborted, and Cove serves on.
    @Test func aClientLeavingMidBodyReleasesTheLease() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        // Far larger than what loopback socket buffers hold (several MiB), so the client hangs up mid-body.
        let bytes = Self.content(32 << 20)
        let digest = up.addBlob(bytes)
        let clock = TestClock()
        let storage: URL
        do {
            let filler = try await InProcessCove(upstream: up.url, configuration: EvictionTests.config(clock, maxSize: nil))
            try await Self.warm(filler, [(digest, bytes)])
            storage = filler.storage
            filler.stop(keepStorage: true)
        }
        clock.advance(300)
        // Restarted with a budget smaller than the blob, so only the lease keeps it.
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: EvictionTests.registries(up), configuration: EvictionTests.config(clock, maxSize: 1 << 20),
                                           storage: storage, logs: logs)
        defer { cove.stop() }
        let port = cove.server.port
        let key = digest.description
        let connection = try await onThread { () -> RawHTTPConnection in
            let c = try RawHTTPConnection(port: port)
            try c.send(RawHTTPConnection.request("/v2/a/blobs/\(digest)"))
            try c.receive(atLeast: 1 << 20)  // the head and the first MiB
            return c
        }
        #expect(cove.mirror.cacheUse.readers(of: key) == 1, "the response holds the lease while it sends")
        #expect(try await cove.mirror.collectGarbage().skippedInUse == 1)
        connection.reset()
        #expect(await eventually(10) { cove.mirror.cacheUse.readers(of: key) == 0 }, "the lease is released")
        let path = "/v2/a/blobs/\(digest)"
        var line: LogCapture.Record?
        #expect(await eventually(20) { line = Self.accessLines(logs, "GET \(path) 200").first; return line != nil })
        #expect(line?.metadata["aborted"] != nil, "\(line?.text ?? "")")
        #expect(Int(line?.metadata["bytes"] ?? "") ?? .max < bytes.count)
        let evicted = try await cove.mirror.collectGarbage()
        #expect(evicted.evicted.map(\.digest) == [key])
        #expect(!cove.isCached(key))
        // Still serving: the evicted blob is filled again from the upstream.
        let again = try await curl("\(cove.url)\(path)", maxTime: 120)
        #expect(again.status == 200 && again.body == bytes)
        #expect(up.count("GET", "/blobs/") == 2)
    }

    /// Without the sendfile channel (TLS listeners set up Hummingbird's plain `HTTP1Channel` under NIOSSL) every
    /// blob body goes by `pread`: same bytes, same ranges, nothing counted as sendfile.
    @Test func connectionsWithoutTheSendfileChannelKeepThePreadPath() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let n = Self.region + 999
        let bytes = Self.content(n)
        let digest = up.addBlob(bytes)
        let cove = try await InProcessCove(upstream: up.url, sendfile: false)
        defer { cove.stop() }
        try await Self.warm(cove, [(digest, bytes)])
        let whole = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(whole.status == 200 && whole.body == bytes)
        let part = try await curl("\(cove.url)/v2/a/blobs/\(digest)", headers: ["Range: bytes=\(n - 300)-"])
        #expect(part.status == 206 && part.body == Array(bytes[(n - 300)...]))
        let m = try await MetricsTests.scrape(cove)
        #expect(m.value("cove_cache_sendfile_bytes_total") == 0)
        #expect(m.value("cove_cache_served_bytes_total") == Double(n + 300))
    }

    /// A client that joins a fill in flight gets the bytes the fill already wrote by sendfile from its temp file
    /// and the rest as they arrive; both clients byte-exact, one upstream fetch.
    @Test func aLateReaderOfAFillSendsTheWrittenPartBySendfile() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = Self.content(12 << 20 + 333)
        // 256 KiB every 20 ms: about a second for the whole blob.
        let digest = up.addBlob(bytes, fault: .slow(chunk: 256 << 10, milliseconds: 20))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let url = "\(cove.url)/v2/a/blobs/\(digest)"
        async let first = curl(url, maxTime: 120)
        // Join once several MiB are in the temp file (the ring holds at most 4 MiB of what was received).
        #expect(try await Self.fillReceived(cove, atLeast: 6 << 20))
        let second = try await curl(url, maxTime: 120)
        #expect(try await first.body == bytes)
        #expect(second.status == 200 && second.body == bytes)
        #expect(up.count("GET", "/blobs/") == 1)
        // At least what was surely in the file when the second client came.
        #expect(try await Self.sendfileBytes(cove) >= Double(1 << 20))
    }

    /// A fill that fails verification while readers send its written part by sendfile: no client gets a whole
    /// body, none hangs (a region of a file cut short would never complete), and the temp file goes.
    @Test func aFailingFillWithSendfileReadersEndsEveryResponse() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = Self.content(10 << 20)
        let digest = up.addBlob(bytes, fault: .corruptMiddle(chunk: 256 << 10, milliseconds: 15))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let url = "\(cove.url)/v2/a/blobs/\(digest)"
        async let early = concurrentGets(url, count: 2, maxTime: 60)
        #expect(try await Self.fillReceived(cove, atLeast: 3 << 20))
        async let late = concurrentGets(url, count: 2, maxTime: 60)
        let results = try await early + late
        for r in results {
            #expect(r.exitCode != 28, "a response hung until curl's --max-time")
            #expect(!(r.exitCode == 0 && r.status == 200 && r.body.count == bytes.count))
        }
        #expect(await eventually(10) { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(digest.description))
    }
}
