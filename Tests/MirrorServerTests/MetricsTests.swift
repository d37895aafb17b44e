import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// `/metrics` through the real stack (Hummingbird + Mirror) with a Prometheus registry of the test's own.
@Suite("Metrics")
struct MetricsTests {
    static func scrape(_ cove: InProcessCove) async throws -> PrometheusText {
        let r = try await curl("\(cove.url)/metrics")
        #expect(r.status == 200)
        #expect(r.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        return PrometheusText(text: r.text)
    }

    @Test func coldThenWarmPullCountsAMissThenAHit() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1", layers: 2, layerSize: 50_000)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let blobBytes = Double(image.blobs.map(\.1.count).reduce(0, +))
        let endpoint = "127.0.0.1:\(up.port)"

        let cold = try await pull(cove, "team/app", tag: "v1")
        #expect(cold.ok)
        // Fills commit after the last byte reached the client: wait until all three are settled.
        #expect(await eventually(10) { image.blobs.allSatisfy { cove.isCached($0.0.description) } })
        var m = try await Self.scrape(cove)
        #expect(m.value("cove_cache_requests_total", ["kind": "manifest", "outcome": "miss"]) == 1)
        #expect(m.value("cove_cache_requests_total", ["kind": "manifest", "outcome": "hit"]) == 0)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "miss"]) == 3)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "hit"]) == 0)
        #expect(m.value("cove_upstream_received_bytes_total", ["kind": "blob"]) == blobBytes)
        #expect(m.value("cove_upstream_received_bytes_total", ["kind": "manifest"]) == Double(image.manifest.count))
        #expect(m.value("cove_fills_total", ["outcome": "verified"]) == 3)
        #expect(m.value("cove_fills_total", ["outcome": "digest_mismatch"]) == 0)
        #expect(m.value("cove_cache_served_bytes_total") == 0)
        #expect(m.value("cove_http_requests_total", ["route": "manifest", "method": "GET", "status": "200"]) == 1)
        #expect(m.value("cove_http_requests_total", ["route": "blob", "method": "GET", "status": "200"]) == 3)
        #expect(m.value("cove_upstream_request_duration_seconds_count", ["endpoint": endpoint, "operation": "blob"]) == 3,
                "\(m.lines("cove_upstream_request_duration_seconds_count"))")
        #expect(m.text.contains("operation=\"blob\",le=\"600"), "buckets reach whole blob transfers: \(m.lines("cove_upstream_request_duration_seconds_bucket"))")
        #expect(m.value("cove_fills_in_flight") == 0)
        #expect(m.value("cove_cache_size_bytes") == blobBytes + Double(image.manifest.count))
        #expect(m.value("cove_upstream_endpoint_cooled", ["endpoint": endpoint]) == 0)

        let warm = try await pull(cove, "team/app", tag: "v1")
        #expect(warm.ok)
        // The body's bytes are counted once written; the scrape may come a moment after the last response.
        var served = 0.0
        #expect(await eventuallyAsync(10) {
            m = (try? await Self.scrape(cove)) ?? m
            served = m.value("cove_cache_served_bytes_total") ?? 0
            return served == blobBytes + Double(image.manifest.count)
        }, "served \(served), expected \(blobBytes + Double(image.manifest.count))")
        #expect(m.value("cove_cache_requests_total", ["kind": "manifest", "outcome": "hit"]) == 1)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "hit"]) == 3)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "miss"]) == 3)
        // Nothing more came from upstream.
        #expect(m.value("cove_upstream_received_bytes_total", ["kind": "blob"]) == blobBytes)
        #expect(up.count("GET", "/blobs/") == 3)
    }

    @Test func aSecondClientOnAColdBlobJoinsTheFill() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(200_000)
        // About 2 s upstream: the second client arrives while the first one's fill runs.
        let digest = up.addBlob(bytes, fault: .slow(chunk: 10_000, milliseconds: 100))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let first = Task { try await curl("\(cove.url)/v2/team/app/blobs/\(digest)") }
        #expect(await eventuallyAsync(10) { await cove.mirror.fillInFlight(digest) != nil })
        let second = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)")
        #expect(try await first.value.body == bytes && second.body == bytes)
        let m = try await Self.scrape(cove)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "miss"]) == 1)
        #expect(m.value("cove_cache_requests_total", ["kind": "blob", "outcome": "fill-join"]) == 1)
        #expect(m.value("cove_upstream_received_bytes_total", ["kind": "blob"]) == Double(bytes.count))
        #expect(up.count("GET", "/blobs/") == 1)
    }

    @Test func evictionsAreCountedInObjectsAndBytes() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let blobs = (0..<2).map { _ in FaultUpstream.randomBytes(100_000) }
        let d = blobs.map { up.addBlob($0) }
        let clock = TestClock()
        // Room for one: the second fill evicts the first (past its grace age).
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(maxSize: 150_000, minFree: .bytes(0), evictionGrace: 60, now: clock.now))
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(d[0])").body == blobs[0])
        #expect(await eventually(10) { cove.isCached(d[0].description) })
        clock.advance(300)
        #expect(try await curl("\(cove.url)/v2/a/blobs/\(d[1])").body == blobs[1])
        #expect(await eventually(10) { cove.isCached(d[1].description) && !cove.isCached(d[0].description) })
        let m = try await Self.scrape(cove)
        #expect(m.value("cove_evicted_objects_total") == 1)
        #expect(m.value("cove_evicted_bytes_total") == 100_000)
        #expect(m.value("cove_cache_limit_bytes") == 150_000)
        #expect(m.value("cove_cache_size_bytes") == 100_000)
    }

    @Test func aDigestMismatchIsCountedAsSuch() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let digest = up.addBlob(FaultUpstream.randomBytes(30_000), fault: .corrupt)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)")
        #expect(r.status != 200 || r.exitCode != 0)
        var m = PrometheusText(text: "")
        #expect(await eventuallyAsync(10) {
            m = (try? await Self.scrape(cove)) ?? m
            return m.value("cove_fills_total", ["outcome": "digest_mismatch"]) == 1
        }, "\(m.lines("cove_fills_total"))")
        #expect(m.value("cove_fills_total", ["outcome": "verified"]) == 0)
        #expect(m.value("cove_fills_total", ["outcome": "aborted"]) == 0)
    }

    @Test func anInterruptedTransferCountsAResumption() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(200_000)
        let digest = up.addBlob(bytes, fault: .drop(after: 50_000, times: 1))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        var m = PrometheusText(text: "")
        #expect(await eventuallyAsync(10) {
            m = (try? await Self.scrape(cove)) ?? m
            return m.value("cove_fills_total", ["outcome": "verified"]) == 1
        })
        #expect(m.value("cove_fills_total", ["outcome": "resumed"]) == 1, "\(m.lines("cove_fills_total"))")
    }

    @Test func anUnreachableEndpointIsCooledDownAndCounted() async throws {
        // Port 1 on loopback: connection refused at once.
        let cove = try await InProcessCove(upstream: "http://127.0.0.1:1")
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(r.status == 503)
        let m = try await Self.scrape(cove)
        #expect((m.value("cove_upstream_cooldowns_total", ["endpoint": "127.0.0.1:1"]) ?? 0) >= 1, "\(m.lines("cove_upstream"))")
        #expect(m.value("cove_upstream_endpoint_cooled", ["endpoint": "127.0.0.1:1"]) == 1)
        #expect((m.value("cove_upstream_errors_total", ["endpoint": "127.0.0.1:1", "operation": "manifest"]) ?? 0) >= 1)
        #expect(m.value("cove_http_requests_total", ["route": "manifest", "method": "GET", "status": "503"]) == 1)
    }

    @Test func rateLimitRemainingIsAGaugePerEndpoint() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.pullLimit.withLock { $0 = .init(limit: 100) }
        up.addImage("team/app", tag: "v1")
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        let m = try await Self.scrape(cove)
        let remaining = m.value("cove_upstream_ratelimit_remaining", ["endpoint": "127.0.0.1:\(up.port)"])
        #expect(remaining != nil && remaining! <= 100 && remaining! >= 90, "\(m.lines("cove_upstream_ratelimit"))")
    }
}

/// Polls an async `condition` every 100 ms for at most `seconds`.
func eventuallyAsync(_ seconds: Double = 10, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return await condition()
}
