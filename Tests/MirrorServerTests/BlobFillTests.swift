import Foundation
import OCI
import Testing
import Upstream
import Mirror

/// Single-flight fills against an in-process fault upstream: sharing, streaming, verification, resume.
@Suite("Blob fills through Cove", .serialized)
struct BlobFillTests {
    @Test func concurrentColdGetsShareOneUpstreamFetch() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(3 << 20)
        let digest = up.addBlob(bytes, fault: .slow(chunk: 256 << 10, milliseconds: 20))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await withThrowingTaskGroup(of: CurlResult.self) { group in
            for i in 0..<32 {
                // Different repository names and routes all attach to the same fill.
                group.addTask { try await curl("\(cove.url)/v2/team\(i % 4)/app/blobs/\(digest)") }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 32)
        for r in results {
            #expect(r.exitCode == 0)
            #expect(r.status == 200)
            #expect(r.body == bytes)
            #expect(r.headers["docker-content-digest"] == digest.description)
        }
        #expect(up.count("GET", "/blobs/") == 1)
        #expect(await eventually { cove.isCached(digest.description) })
        #expect(cove.tmpFiles().isEmpty)
    }

    @Test func firstBytesArriveBeforeTheFillEnds() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(2 << 20)
        // 16 chunks x 400 ms: the whole fill takes about 6.4 s.
        let digest = up.addBlob(bytes, fault: .slow(chunk: 128 << 10, milliseconds: 400))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        // A client that gives up after 3 s must already have received part of the body.
        let partial = try await curl("\(cove.url)/v2/a/blobs/\(digest)", maxTime: 3)
        #expect(partial.exitCode == 28)  // curl: operation timed out
        #expect(partial.status == 200)
        #expect(partial.body.count > 0 && partial.body.count < bytes.count)
        #expect(Array(bytes.prefix(partial.body.count)) == partial.body)
        // ...and its disconnect did not cancel the fill.
        #expect(await eventually(15) { cove.isCached(digest.description) })
        #expect(up.count("GET", "/blobs/") == 1)
        let full = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(full.body == bytes)
        #expect(up.count("GET", "/blobs/") == 1)
    }

    @Test func corruptUpstreamBytesNeverReachAClientWholeAndAreNotCached() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(1 << 20)
        let digest = up.addBlob(bytes, fault: .corrupt)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await concurrentGets("\(cove.url)/v2/a/blobs/\(digest)", count: 4)
        for r in results {
            // Either an error status, or a 200 whose body was cut short (curl exit 18): never a full body.
            let fullSuccess = r.exitCode == 0 && r.status == 200 && r.body.count == bytes.count
            #expect(!fullSuccess)
            if r.status == 200 { #expect(r.body.count < bytes.count) }
        }
        #expect(await eventually { cove.tmpFiles().isEmpty })
        #expect(!cove.isCached(digest.description))
        let fetchesBefore = up.count("GET", "/blobs/")
        // Every fill that fetched the bad bytes was counted as failed (clients arriving together share one).
        #expect(fetchesBefore >= 1 && cove.mirror.failedFills == fetchesBefore)
        // The next request starts a fresh fill; once the upstream is healthy again, it succeeds.
        up.setFault(digest, .none)
        let again = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(again.status == 200 && again.body == bytes)
        #expect(up.count("GET", "/blobs/") == fetchesBefore + 1)
        #expect(await eventually { cove.isCached(digest.description) })
    }

    @Test func droppedConnectionResumesWithRange() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(2 << 20)
        let digest = up.addBlob(bytes, fault: .drop(after: 1 << 20, times: 1))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.exitCode == 0 && r.status == 200)
        #expect(r.body == bytes)
        let gets = up.requests("GET", "/blobs/")
        #expect(gets.count == 2)
        #expect(gets.first?.range == nil)
        #expect(gets.last?.range == "bytes=\(1 << 20)-")
        #expect(await eventually { cove.isCached(digest.description) })
    }

    @Test func upstreamIgnoringRangeRestartsFromZero() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(1 << 20)
        let digest = up.addBlob(bytes, fault: .dropAndIgnoreRange(after: 300_000))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        #expect(up.count("GET", "/blobs/") == 2)
        #expect(await eventually { cove.isCached(digest.description) })
    }

    /// The same through the fill pipeline (a blob over 1 MiB) with several readers: the restarted body rewrites
    /// the temp file without cutting it under them, and everyone gets the blob byte-exact.
    @Test func upstreamIgnoringRangeRestartsAPipelinedFillUnderItsReaders() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(9 << 20 + 5)
        let digest = up.addBlob(bytes, fault: .dropAndIgnoreRange(after: 5 << 20))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await concurrentGets("\(cove.url)/v2/a/blobs/\(digest)", count: 4)
        for r in results { #expect(r.status == 200 && r.body == bytes) }
        #expect(up.count("GET", "/blobs/") == 2)
        #expect(await eventually { cove.isCached(digest.description) })
        let again = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(again.status == 200 && again.body == bytes)
    }

    @Test func rangesOnAFillInFlightAndOnTheCachedBlob() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(2 << 20)
        let digest = up.addBlob(bytes, fault: .slow(chunk: 128 << 10, milliseconds: 40))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let url = "\(cove.url)/v2/a/blobs/\(digest)"
        async let whole = curl(url)
        try await Task.sleep(for: .milliseconds(100))
        async let mid = curl(url, headers: ["Range: bytes=1000000-1099999"])
        async let suffix = curl(url, headers: ["Range: bytes=-100"])
        async let open = curl(url, headers: ["Range: bytes=2000000-"])
        let (w, m, s, o) = try await (whole, mid, suffix, open)
        #expect(w.body == bytes)
        #expect(m.status == 206 && m.body == Array(bytes[1_000_000...1_099_999]))
        #expect(m.headers["content-range"] == "bytes 1000000-1099999/\(bytes.count)")
        #expect(s.status == 206 && s.body == Array(bytes.suffix(100)))
        #expect(o.status == 206 && o.body == Array(bytes[2_000_000...]))
        #expect(up.count("GET", "/blobs/") == 1)

        let cached = try await curl(url, headers: ["Range: bytes=5-14"])
        #expect(cached.status == 206 && cached.body == Array(bytes[5...14]))
        #expect(cached.headers["accept-ranges"] == "bytes")
        let bad = try await curl(url, headers: ["Range: bytes=\(bytes.count)-"])
        #expect(bad.status == 416)
        #expect(bad.headers["content-range"] == "bytes */\(bytes.count)")
        let head = try await curl(url, method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == String(bytes.count))
        #expect(up.count("GET", "/blobs/") == 1)
    }

    @Test func headOnAnUncachedBlobAsksUpstreamWithoutFilling() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(10_000)
        let digest = up.addBlob(bytes)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let head = try await curl("\(cove.url)/v2/a/blobs/\(digest)", method: "HEAD")
        #expect(head.status == 200)
        #expect(head.headers["content-length"] == "10000")
        #expect(head.headers["docker-content-digest"] == digest.description)
        #expect(up.count("HEAD", "/blobs/") == 1)
        #expect(up.count("GET", "/blobs/") == 0)
        #expect(!cove.isCached(digest.description))
        let missing = try await curl("\(cove.url)/v2/a/blobs/sha256:\(String(repeating: "0", count: 64))", method: "HEAD")
        #expect(missing.status == 404)
    }

    @Test func upstreamErrorsMapToRegistryErrors() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let limited = up.addBlob(FaultUpstream.randomBytes(100), fault: .status(429))
        let broken = up.addBlob(FaultUpstream.randomBytes(100), fault: .status(500))
        let fine = FaultUpstream.randomBytes(100)
        let good = up.addBlob(fine)
        let later = up.addBlob(FaultUpstream.randomBytes(100))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let missing = try await curl("\(cove.url)/v2/a/blobs/sha256:\(String(repeating: "1", count: 64))")
        #expect(missing.status == 404)
        #expect(String(decoding: missing.body, as: UTF8.self).contains("BLOB_UNKNOWN"))
        let manifest = try await curl("\(cove.url)/v2/a/manifests/nope")
        #expect(manifest.status == 404)
        #expect(String(decoding: manifest.body, as: UTF8.self).contains("MANIFEST_UNKNOWN"))
        let r500 = try await curl("\(cove.url)/v2/a/blobs/\(broken)")
        #expect(r500.status == 503)
        #expect(String(decoding: r500.body, as: UTF8.self).contains("UNAVAILABLE"))
        // A 5xx cools the endpoint down, but a registry's only endpoint is still tried.
        let ok = try await curl("\(cove.url)/v2/a/blobs/\(good)")
        #expect(ok.status == 200 && ok.body == fine)
        let r429 = try await curl("\(cove.url)/v2/a/blobs/\(limited)")
        #expect(r429.status == 429)
        #expect(r429.headers["retry-after"] == "7")
        #expect(String(decoding: r429.body, as: UTF8.self).contains("TOOMANYREQUESTS"))
        // Retry-After is honoured: while it runs, nothing is sent upstream and clients get 429 with the rest.
        let sent = up.log.withLock { $0.requests.count }
        let blocked = try await curl("\(cove.url)/v2/a/blobs/\(later)")
        #expect(blocked.status == 429)
        #expect((Int(blocked.headers["retry-after"] ?? "") ?? 0) >= 1)
        #expect((Int(blocked.headers["retry-after"] ?? "") ?? 99) <= 7)
        #expect(up.log.withLock { $0.requests.count } == sent)
    }

    @Test func blobSizeCapRefusesLargeBlobs() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let digest = up.addBlob(FaultUpstream.randomBytes(200_000))
        let cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(maxBlobSize: 100_000))
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.status == 400)
        #expect(String(decoding: r.body, as: UTF8.self).contains("SIZE_INVALID"))
        #expect(!cove.isCached(digest.description))
    }

    @Test func redirectToCDNNeverCarriesAuthorization() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let credentials = Credentials(username: "alice", password: "secret")
        up.requiredAuthorization.withLock { $0 = "Basic YWxpY2U6c2VjcmV0" }
        let bytes = FaultUpstream.randomBytes(50_000)
        let digest = up.addBlob(bytes, fault: .redirectToCDN)
        let cove = try await InProcessCove(upstream: up.url, credentials: credentials)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        let cdn = up.cdnLog.withLock { $0.requests }
        #expect(cdn.count == 1)
        #expect(cdn.allSatisfy { $0.authorization == nil })
        // The origin did get the credentials (after its Basic challenge).
        #expect(up.requests("GET", "/blobs/").contains { $0.authorization == "Basic YWxpY2U6c2VjcmV0" })
    }

    @Test func concurrentTagResolutionsShareOneUpstreamRequest() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let body = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(String(repeating: "a", count: 64))","size":2},"layers":[]}"#.utf8)
        let digest = up.addManifest("team/app", tag: "v1", body: body, fault: .slow(chunk: 0, milliseconds: 300))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let results = try await concurrentGets("\(cove.url)/v2/team/app/manifests/v1", count: 8)
        for r in results {
            #expect(r.status == 200 && r.body == body)
            #expect(r.headers["docker-content-digest"] == digest.description)
            #expect(r.headers["content-type"] == "application/vnd.oci.image.manifest.v1+json")
        }
        #expect(up.count("GET", "/manifests/") == 1)
    }

    @Test func shutdownDrainLetsAFillInFlightCommit() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let bytes = FaultUpstream.randomBytes(1 << 20)
        let digest = up.addBlob(bytes, fault: .slow(chunk: 128 << 10, milliseconds: 100))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        // The client gives up at once; the fill goes on, and draining waits for it to land.
        let r = try await curl("\(cove.url)/v2/a/blobs/\(digest)", maxTime: 0.3)
        #expect(r.exitCode == 28)
        #expect(!cove.isCached(digest.description))
        let left = await cove.mirror.drainFills(within: 10)
        #expect(left == 0)
        #expect(await eventually { cove.isCached(digest.description) })
        #expect(await cove.mirror.drainFills(within: 0.1) == 0)
    }
}
