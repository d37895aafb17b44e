import BlobStore
import CacheAdmin
import CacheIndex
import Foundation
import Logging
import Mirror
import OCI
import Testing
import Upstream

/// `verify`, `stats`, `ls` and start-up reconciliation, against a real in-process Cove, both in this process
/// (storage lock free) and through the admin socket of a "running server" (the in-process Cove holds the lock).
@Suite("Admin commands", .serialized)
struct AdminCommandTests {
    /// An upstream with one image (`team/app:v1`: manifest, config, layer), pulled through a Cove.
    struct Cached {
        let up: FaultUpstream
        let cove: InProcessCove
        let manifest: Digest
        let manifestBody: [UInt8]
        let config: Digest
        let configBytes: [UInt8]
        let layer: Digest
        let layerBytes: [UInt8]

        func path(_ d: Digest) -> String { cove.storage.path + "/blobs/sha256/\(d.hex.prefix(2))/\(d.hex)" }
        var total: Int64 { Int64(manifestBody.count + configBytes.count + layerBytes.count) }
    }

    static func cached() async throws -> Cached {
        let up = try await FaultUpstream.start()
        let config = Array(#"{"architecture":"amd64","os":"linux"}"#.utf8)
        let layer = FaultUpstream.randomBytes(300_000)
        let c = up.addBlob(config), l = up.addBlob(layer)
        let body = Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\#(c)","size":\#(config.count)},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\#(l)","size":\#(layer.count)}]}"#.utf8)
        let m = up.addManifest("team/app", tag: "v1", body: body)
        let cove = try await InProcessCove(upstream: up.url)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == body)
        #expect(try await curl("\(cove.url)/v2/team/app/blobs/\(c)").body == config)
        #expect(try await curl("\(cove.url)/v2/team/app/blobs/\(l)").body == layer)
        #expect(await eventually { cove.isCached(l.description) && cove.isCached(c.description) })
        return Cached(up: up, cove: cove, manifest: m, manifestBody: body, config: c, configBytes: config, layer: l, layerBytes: layer)
    }

    /// Serves the admin socket for `cove` (as `cove serve` does) until the returned task is cancelled.
    static func serveAdmin(_ cove: InProcessCove, reconciliation: StartupReconciliation? = nil) async throws -> Task<Void, any Error> {
        let (ready, readyContinuation) = AsyncStream<Void>.makeStream()
        var logger = Logger(label: "admin-test")
        logger.logLevel = .critical
        let service = AdminSocketService(path: AdminChannel.socketPath(storage: cove.storage),
                                         cache: CacheAdmin(mirror: cove.mirror, reconciliation: reconciliation, logger: logger),
                                         logger: logger, onRunning: { readyContinuation.yield(); readyContinuation.finish() })
        let task = Task { try await service.run() }
        var it = ready.makeAsyncIterator()
        _ = await it.next()
        return task
    }

    static func flipByte(_ path: String, at offset: Int) throws {
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[offset] ^= 0x01
        try data.write(to: URL(fileURLWithPath: path))
    }

    @Test func verifyInProcessFindsFlippedBytesMissingFilesOrphansAndTempFilesAndRepairs() async throws {
        let c = try await Self.cached()
        defer { c.up.stop() }
        c.cove.stop(keepStorage: true)
        defer { try? FileManager.default.removeItem(at: c.cove.storage) }

        let clean = try await AdminChannel.run(VerifyCommand.self, .init(repair: false), storage: c.cove.storage)
        #expect(clean.route == .inProcess)
        #expect(clean.response.findings == [] && clean.response.exitStatus == 0)
        #expect(clean.response.checkedRows == 3 && clean.response.checkedBytes == c.total)

        try Self.flipByte(c.path(c.layer), at: 150_000)   // same size, one bit
        try Self.flipByte(c.path(c.manifest), at: 20)     // hashed by the manifest rule
        try FileManager.default.removeItem(atPath: c.path(c.config))
        let stray = FaultUpstream.randomBytes(1000), strayDigest = Digest.sha256(of: stray)
        let strayPath = c.cove.storage.path + "/blobs/sha256/\(strayDigest.hex.prefix(2))/\(strayDigest.hex)"
        try FileManager.default.createDirectory(atPath: (strayPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(stray).write(to: URL(fileURLWithPath: strayPath))
        try Data([1, 2, 3]).write(to: c.cove.storage.appendingPathComponent("tmp/deadbeef-leftover"))

        let found = try await AdminChannel.run(VerifyCommand.self, .init(repair: false), storage: c.cove.storage).response
        #expect(found.exitStatus == 1)
        let byKind = Dictionary(grouping: found.findings, by: \.kind)
        #expect(Set(byKind[.mismatch]?.compactMap(\.digest) ?? []) == [c.layer.description, c.manifest.description])
        #expect(byKind[.missing]?.map(\.digest) == [c.config.description])
        #expect(byKind[.orphan]?.map(\.digest) == [strayDigest.description])
        #expect(byKind[.temporary]?.map(\.path) == ["tmp/deadbeef-leftover"])
        #expect(found.findings.allSatisfy { !$0.repaired })
        #expect(found.text.contains("MISMATCH") && found.text.contains("run `cove verify --repair`"))
        // Nothing was touched without --repair.
        #expect(FileManager.default.fileExists(atPath: strayPath))

        let repaired = try await AdminChannel.run(VerifyCommand.self, .init(repair: true), storage: c.cove.storage).response
        #expect(repaired.exitStatus == 1)
        #expect(repaired.findings.count == 5 && repaired.findings.allSatisfy(\.repaired))
        #expect(!FileManager.default.fileExists(atPath: c.path(c.layer)) && !FileManager.default.fileExists(atPath: strayPath))
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: c.cove.storage.path + "/tmp")) ?? ["?"]).isEmpty)

        let after = try await AdminChannel.run(VerifyCommand.self, .init(repair: false), storage: c.cove.storage).response
        #expect(after.findings == [] && after.exitStatus == 0 && after.checkedRows == 0)
        // The repaired index is consistent for a server: the image is fetched again, whole.
        let again = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(c.up.url)])],
                                            storage: c.cove.storage)
        defer { again.stop(keepStorage: true) }
        #expect(try await curl("\(again.url)/v2/team/app/blobs/\(c.layer)").body == c.layerBytes)
        #expect(c.up.count("GET", "/blobs/\(c.layer)") == 2)
    }

    @Test func verifyThroughTheSocketOfARunningServer() async throws {
        let c = try await Self.cached()
        defer { c.up.stop(); c.cove.stop() }
        let admin = try await Self.serveAdmin(c.cove)
        defer { admin.cancel() }
        let socket = AdminChannel.socketPath(storage: c.cove.storage)
        var st = stat()
        #expect(lstat(socket, &st) == 0 && (st.st_mode & 0o777) == 0o600)

        let clean = try await AdminChannel.run(VerifyCommand.self, .init(repair: false), storage: c.cove.storage)
        #expect(clean.route == .server)
        #expect(clean.response.findings == [] && clean.response.checkedRows == 3)

        try Self.flipByte(c.path(c.layer), at: 7)
        // A temp file is a fill in flight for a running server, and a file without a row committed just now
        // may be waiting for its row: neither is a problem.
        try Data([1]).write(to: c.cove.storage.appendingPathComponent("tmp/abc-in-flight"))
        // One nothing has written to for two hours is a leftover, server or not.
        let stale = c.cove.storage.appendingPathComponent("tmp/abc-stale")
        try Data([2]).write(to: stale)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-7200)], ofItemAtPath: stale.path)
        let young = FaultUpstream.randomBytes(100), youngDigest = Digest.sha256(of: young)
        let youngPath = c.cove.storage.path + "/blobs/sha256/\(youngDigest.hex.prefix(2))/\(youngDigest.hex)"
        try FileManager.default.createDirectory(atPath: (youngPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(young).write(to: URL(fileURLWithPath: youngPath))

        let found = try await AdminChannel.run(VerifyCommand.self, .init(repair: true), storage: c.cove.storage)
        #expect(found.route == .server)
        #expect(found.response.findings.map(\.kind) == [.mismatch, .temporary])
        #expect(found.response.findings.first?.digest == c.layer.description && found.response.findings.first?.repaired == true)
        #expect(found.response.findings.last?.path == "tmp/abc-stale" && !FileManager.default.fileExists(atPath: stale.path))
        #expect(found.response.fillsInFlight == 1 && found.response.skippedRecent == 1)
        #expect(FileManager.default.fileExists(atPath: youngPath))
        #expect(((try? c.cove.mirror.index.blob(c.layer.description)) ?? nil) == nil)
        // The running server fetches the repaired blob again.
        #expect(try await curl("\(c.cove.url)/v2/team/app/blobs/\(c.layer)").body == c.layerBytes)
        #expect(c.up.count("GET", "/blobs/\(c.layer)") == 2)

        admin.cancel()
        _ = await admin.result
        #expect(!FileManager.default.fileExists(atPath: socket))  // removed on shutdown
    }

    @Test func statsAndListWithKnownContentBothWays() async throws {
        let c = try await Self.cached()
        defer { c.up.stop() }
        let admin = try await Self.serveAdmin(c.cove)
        #expect(try await curl("\(c.cove.url)/v2/team/app/blobs/\(c.layer)").status == 200)  // a hit

        let (live, route) = try await AdminChannel.run(StatsCommand.self, .init(), storage: c.cove.storage)
        #expect(route == .server)
        #expect(live.blobs == 3 && live.manifests == 1 && live.tags == 1 && live.bytes == c.total)
        #expect(live.limitBytes == nil && live.serverRunning)
        #expect(live.hits == 1 && live.misses == 3 && live.evictions == 0)
        #expect(live.hitRatio == 0.25)
        #expect(live.text.contains("25.0% (1 hits, 3 misses") && live.text.contains("none"))

        let all = try await AdminChannel.run(ListCommand.self, .init(repository: nil), storage: c.cove.storage).response
        #expect(all.repositories.count == 1)
        let repo = try #require(all.repositories.first)
        #expect(repo.registry == "upstream.test" && repo.repository == "team/app" && repo.tags == 1 && repo.images == 1)
        #expect(repo.bytes == c.total && repo.lastAccess != nil && repo.pinned == false)
        #expect(all.text.hasPrefix("REPOSITORY") && all.text.contains("upstream.test/team/app") && all.text.hasSuffix("no"))
        let one = try await AdminChannel.run(ListCommand.self, .init(repository: "team/app"), storage: c.cove.storage).response
        #expect(one.images.map(\.tag) == ["v1"] && one.images.first?.digest == c.manifest.description)
        #expect(one.images.first?.bytes == c.total && one.images.first?.mediaType == MediaType.ociManifest)
        #expect(one.text.contains(c.manifest.description) && one.exitStatus == 0)
        let none = try await AdminChannel.run(ListCommand.self, .init(repository: "team/nope"), storage: c.cove.storage).response
        #expect(none.exitStatus == 1 && none.images.isEmpty)

        admin.cancel()
        _ = await admin.result
        try c.cove.mirror.flushAccessTimes()  // as a server's shutdown does
        c.cove.stop(keepStorage: true)
        defer { try? FileManager.default.removeItem(at: c.cove.storage) }
        let (offline, offlineRoute) = try await AdminChannel.run(StatsCommand.self, .init(), storage: c.cove.storage)
        #expect(offlineRoute == .inProcess)
        // The counters are totals kept in the index: the same without a server.
        #expect(offline.blobs == 3 && offline.bytes == c.total && !offline.serverRunning && offline.hits == 1 && offline.misses == 3)
        #expect(offline.text.contains("25.0% (1 hits, 3 misses") && offline.text.contains("not running"))
        let offlineList = try await AdminChannel.run(ListCommand.self, .init(repository: "upstream.test/team/app"), storage: c.cove.storage).response
        // Same answer as through the socket (dates travel as whole ISO 8601 seconds, so compare the rendering).
        #expect(offlineList.text == one.text)
    }

    @Test func aStorageHeldByAServerWithoutASocketIsReportedNotHung() async throws {
        let c = try await Self.cached()
        defer { c.up.stop(); c.cove.stop() }
        let started = ContinuousClock.now
        do {
            _ = try await AdminChannel.run(StatsCommand.self, .init(), storage: c.cove.storage, patience: 0.5)
            Issue.record("a command reached a server that has no admin socket")
        } catch let e as AdminError {
            #expect("\(e)".contains("admin socket"))
        }
        #expect(ContinuousClock.now - started < .seconds(5))
        do {
            _ = try await AdminChannel.run(StatsCommand.self, .init(), storage: URL(fileURLWithPath: "/nonexistent/cove-storage"))
            Issue.record("a missing storage directory was accepted")
        } catch AdminError.noStorage {}
    }

    @Test func startupReconciliationRemovesOrphansAndForgetsRowsWithoutFiles() async throws {
        let c = try await Self.cached()
        defer { c.up.stop() }
        c.cove.stop(keepStorage: true)
        defer { try? FileManager.default.removeItem(at: c.cove.storage) }
        // As after a crash: a row whose file is gone, a committed file whose row was never written.
        try FileManager.default.removeItem(atPath: c.path(c.config))
        let stray = FaultUpstream.randomBytes(500), strayDigest = Digest.sha256(of: stray)
        let strayPath = c.cove.storage.path + "/blobs/sha256/\(strayDigest.hex.prefix(2))/\(strayDigest.hex)"
        try FileManager.default.createDirectory(atPath: (strayPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(stray).write(to: URL(fileURLWithPath: strayPath))
        try await Task.sleep(for: .milliseconds(20))

        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(c.up.url)])],
                                           storage: c.cove.storage)
        defer { cove.stop(keepStorage: true) }
        var logger = Logger(label: "reconcile-test")
        logger.logLevel = .critical
        let reconciliation = StartupReconciliation(store: cove.mirror.store, index: cove.mirror.index, logger: logger)
        // A file this process commits after start-up is never touched, even without a row (yet).
        try await Task.sleep(for: .milliseconds(20))
        let fresh = FaultUpstream.randomBytes(600), freshDigest = Digest.sha256(of: fresh)
        let freshPath = c.cove.storage.path + "/blobs/sha256/\(freshDigest.hex.prefix(2))/\(freshDigest.hex)"
        try FileManager.default.createDirectory(atPath: (freshPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(fresh).write(to: URL(fileURLWithPath: freshPath))

        let admin = try await Self.serveAdmin(cove, reconciliation: reconciliation)
        defer { admin.cancel() }
        let stats = try await AdminChannel.run(StatsCommand.self, .init(), storage: cove.storage).response
        #expect(stats.reconciliation == "pending")
        await reconciliation.run()
        let summary = try #require(await reconciliation.wait())
        #expect(summary.removedFiles == 1 && summary.forgottenRows == 1 && summary.scannedRows == 3 && summary.scannedFiles == 4)
        #expect(!FileManager.default.fileExists(atPath: strayPath) && FileManager.default.fileExists(atPath: freshPath))
        #expect(((try? cove.mirror.index.blob(c.config.description)) ?? nil) == nil)
        #expect(reconciliation.statusText.hasPrefix("done"))
        // The fresh file is younger than the commit grace, so a live verify does not judge it either.
        let verify = try await AdminChannel.run(VerifyCommand.self, .init(repair: false), storage: cove.storage).response
        #expect(verify.findings == [] && verify.skippedRecent == 1)
    }
}
