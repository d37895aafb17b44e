import BlobStore
import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Readers parked on a stalled fill stop waiting when their clients hang up, so a stall does not pile up
/// requests; the fill itself goes on (it belongs to the cache).
@Suite("Reader cancellation", .serialized)
struct ReaderCancellationTests {
    @Test func readersOfAStalledFillStopWaitingWhenTheirClientsLeave() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        // 4 KiB arrive, then the upstream pauses for 60 s (longer than the whole test): the fill stalls below every
        // reader's wake threshold, so only their clients leaving can end the readers' wait.
        let bytes = FaultUpstream.randomBytes(1 << 20)
        let digest = up.addBlob(bytes, fault: .slow(chunk: 4096, milliseconds: 60000))
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        // Four clients that give up after 12 s (curl closes the connection). On a loaded CI machine starting four
        // curls and parking their readers took longer than the 4 s this once allowed.
        async let clients = concurrentGets("\(cove.url)/v2/a/blobs/\(digest)", count: 4, maxTime: 12)
        var fill: BlobFill?
        for _ in 0..<600 where fill == nil {
            if let f = await cove.mirror.fillInFlight(digest), f.parkedReaders == 4 { fill = f } else { try await Task.sleep(for: .milliseconds(20)) }
        }
        let parked = fill != nil
        #expect(parked, "four readers park on the stalled fill")
        let results = try await clients
        #expect(results.allSatisfy { $0.exitCode == 28 }, "the clients timed out")
        let f = try #require(fill)
        #expect(await eventually(10) { f.parkedReaders == 0 }, "every parked reader stopped when its client left")
        #expect(await cove.mirror.fillInFlight(digest) != nil, "the fill goes on")
    }
}
