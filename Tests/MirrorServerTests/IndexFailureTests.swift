import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// An index that cannot be read is not a miss: Cove answers 503 (and logs), neither going upstream for content
/// it holds nor answering 404 offline; once the index reads again, everything cached is still there.
@Suite("Index failures", .serialized)
struct IndexFailureTests {
    /// Runs SQL on the index with Python's sqlite3 (another process, like an operator or a damaged disk would).
    static func sql(_ cove: InProcessCove, _ statement: String) async throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=10); c.executescript(sys.argv[2]); c.close()",
                       cove.storage.appendingPathComponent("index.sqlite").path, statement]
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            do { try p.run() } catch { c.resume(throwing: error) }
        }
        guard status == 0 else { throw TestFailure("sqlite3 \(statement) exited \(status)") }
    }

    @Test func anUnreadableIndexGives503NotAMissOnlineAndOffline() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        var cove = try await InProcessCove(upstream: up.url)
        #expect(try await pull(cove, "team/app", tag: "v1").ok)
        let fetched = up.allRequests.count

        try await Self.sql(cove, "ALTER TABLE blob RENAME TO blob_hidden; ALTER TABLE tag RENAME TO tag_hidden;")
        let blob = try await curl("\(cove.url)/v2/team/app/blobs/\(image.configDigest)")
        #expect(blob.status == 503 && UpstreamAnswerTests.errorJSON(blob)?.code == "UNAVAILABLE")
        let manifest = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(manifest.status == 503)
        #expect(up.allRequests.count == fetched, "an index error must not send the request upstream")

        // Offline on the same storage: 503, not 404.
        cove.stop(keepStorage: true)
        let storage = cove.storage
        cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                       configuration: MirrorConfiguration(offline: true), storage: storage)
        defer { cove.stop() }
        let offline = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(offline.status == 503)
        let offlineBlob = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])")
        #expect(offlineBlob.status == 503)

        // The index reads again: nothing was lost.
        try await Self.sql(cove, "ALTER TABLE blob_hidden RENAME TO blob; ALTER TABLE tag_hidden RENAME TO tag;")
        let back = try await pull(cove, "team/app", tag: "v1")
        #expect(back.ok && back.manifest.body == image.manifest)
        #expect(up.allRequests.count == fetched)
    }
}
