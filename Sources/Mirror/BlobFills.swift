import BlobStore
import CacheIndex
import Foundation
import Logging
import OCI
import Synchronization
import Upstream

/// The single-flight fill coordinator: at most one upstream fetch per digest, whoever asks and however often.
///
/// The first miss creates a `BlobFill` and starts its transfer in a task owned by the coordinator; every
/// later request for the digest attaches to that fill and streams the growing file. A fill ends by committing
/// (file renamed into the store, index row written) or failing (temp file deleted, readers aborted); either way
/// it leaves the table, so the next request for a failed digest starts afresh.
actor BlobFills {
    private var active: [Digest: BlobFill] = [:]
    /// Callers of `waitUntilSettled`, per digest, resumed when its fill leaves the table.
    private var settledWaiters: [Digest: [CheckedContinuation<Void, Never>]] = [:]
    let store: BlobStore
    let index: CacheIndex
    let configuration: MirrorConfiguration
    let slots: AsyncSemaphore
    let logger: Logger
    let use: CacheUse
    let budget: CacheBudget
    let metrics: MirrorMetrics
    /// Fills that failed verification or transfer.
    let failures = Atomic<Int>(0)

    init(store: BlobStore, index: CacheIndex, configuration: MirrorConfiguration, use: CacheUse, budget: CacheBudget,
         metrics: MirrorMetrics, logger: Logger) {
        self.metrics = metrics
        self.store = store
        self.index = index
        self.configuration = configuration
        self.slots = AsyncSemaphore(configuration.maxConcurrentFills)
        self.use = use
        self.budget = budget
        self.logger = logger
    }

    /// Fills in flight.
    var activeCount: Int { active.count }

    /// The fill in flight for `digest`, if any (a HEAD answers from it without starting one).
    func inFlight(_ digest: Digest) -> BlobFill? { active[digest] }

    /// The temp files (`tmp/<name>`) of the fills in flight.
    func temporaryPaths() -> Set<String> { Set(active.values.map(\.temporaryPath)) }

    /// Attaches to the fill of `digest`, starting one from `name` on `registry` if none runs. (Blobs are
    /// content-addressed, so a fill started for one registry serves requests from all of them.)
    /// - Returns: nil when the blob landed in the store in the meantime, else the fill and whether this call
    ///   started it (false: joined one in flight).
    /// - Throws: `BlobStoreError.io` when the temp file cannot be created.
    func attach(_ registry: RegistryClient, _ name: RepositoryName, _ digest: Digest) throws -> (fill: BlobFill, started: Bool)? {
        if let fill = active[digest] { return (fill, false) }
        if store.contains(digest), (try index.blob(digest.description)) != nil { return nil }
        let fill = try BlobFill(store: store, digest: digest)
        active[digest] = fill
        // In use from now until its row is written: eviction never claims it, and a claim already under
        // way is waited for before the rename (`beforeCommit`).
        use.beginFill(digest.description)
        Task.detached { [self] in
            await run(fill, registry, name)
            await finished(digest)
        }
        return (fill, true)
    }

    /// The fills in flight, for the status page: digest, bytes written, announced size.
    func progress() -> [(digest: Digest, written: Int64, size: Int64?)] {
        active.values.map { ($0.digest, $0.bytesWritten, $0.announcedSize) }.sorted { $0.digest.description < $1.digest.description }
    }

    private func finished(_ digest: Digest) {
        active[digest] = nil
        use.endFill(digest.description)
        for waiter in settledWaiters.removeValue(forKey: digest) ?? [] { waiter.resume() }
    }

    /// Waits until no fill of `digest` is in flight: the one running now committed (file and row) or failed.
    func waitUntilSettled(_ digest: Digest) async {
        guard active[digest] != nil else { return }
        await withCheckedContinuation { settledWaiters[digest, default: []].append($0) }
    }

    /// Drives one fill to its end. Transport failures resume from the bytes already written with
    /// `Range: bytes=N-` (exponential backoff from 0.5 s); an upstream that ignores the range and answers 200
    /// makes the writer start over from zero. The whole blob is verified either way.
    ///
    /// Clients wait in `BlobFill.waitForSize` until the first response head: that wait is bounded by one
    /// deadline of the registry's `requestTimeout`, retries included, so they get an answer (the size, or 503
    /// naming the stalled host) in time. Once a head arrived, each retry gets a fresh deadline for its own head.
    private nonisolated func run(_ fill: BlobFill, _ registry: RegistryClient, _ name: RepositoryName) async {
        await slots.acquire()
        let writer = fill.makeWriter()
        writer.sizeLimit = configuration.maxBlobSize
        let use = use, key = fill.digest.description
        writer.beforeCommit = { use.waitUntilNotEvicting(key) }
        let budget = budget, digest = fill.digest
        let sink = FillSink(writer: writer) { size in budget.admit(digest, size: size) }
        sink.onAttempt = { fill.sourceLabel = $0 }
        let upstreamName = registry.upstreamName(for: name)
        var attempt = 0
        var failure: DistributionError?
        var servedBy: RegistryClient.Endpoint?
        var deadline = registry.operationDeadline()
        while true {
            let before = writer.bytesWritten
            do {
                servedBy = try await registry.blob(upstreamName, fill.digest, from: { writer.bytesWritten }, into: sink, headDeadline: deadline).1
                break
            } catch {
                if let refused = sink.failure { failure = refused; break }
                // A transfer that made progress earns its retries back: only consecutive failures count.
                let next = writer.bytesWritten > before ? 1 : attempt + 1
                let delay = 0.5 * pow(2, Double(next - 1))
                if sink.answered { deadline = registry.operationDeadline().later(by: delay) }
                guard case .transport = error, attempt < configuration.fillRetries,
                      (deadline.remaining() ?? .infinity) > delay + 0.5 else {
                    failure = .from(error, notFound: .blobUnknown, subject: "blob \(fill.digest)")
                    break
                }
                attempt = next
                metrics.fillResumed.increment()
                logger.warning("blob transfer interrupted; resuming", metadata: [
                    "digest": "\(fill.digest)", "offset": "\(writer.bytesWritten)", "error": "\(error)", "retry_in_s": "\(delay)",
                ])
                try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
            }
        }
        var reserved = sink.reserved, stored: Int64 = 0, mismatch = false
        metrics.upstreamBlobBytes.increment(by: sink.received)
        if let failure {
            writer.fail(failure)
        } else {
            if !sink.admitted {
                // No length was announced: the budget decides now, with the bytes already written.
                writer.keep = budget.admit(fill.digest, size: writer.bytesWritten)
                if writer.keep { reserved = writer.bytesWritten }
            }
            do {
                writer.source = servedBy?.client.configuration.url
                if try writer.commit() {
                    do {
                        try index.insertBlob(digest: fill.digest.description, size: writer.bytesWritten, mediaType: sink.mediaType, now: configuration.now())
                    } catch {
                        // No file without its row: take the file back out.
                        store.remove(fill.digest)
                        throw error
                    }
                    stored = writer.bytesWritten
                    logger.info("blob cached", metadata: [
                        "digest": "\(fill.digest)", "bytes": "\(writer.bytesWritten)", "upstream": "\(servedBy?.label ?? "-")",
                    ])
                } else {
                    logger.notice("blob served without being kept (cache budget)", metadata: [
                        "digest": "\(fill.digest)", "bytes": "\(writer.bytesWritten)",
                    ])
                }
            } catch {
                // Verification failures already failed the fill (readers aborted); this is for the log, and
                // the endpoint that sent the bytes is cooled down so the next request asks another one.
                failure = DistributionError(.unavailable, "blob \(fill.digest): \(error)")
                if let e = error as? BlobStoreError, Self.isVerificationFailure(e) { mismatch = true }
                if let servedBy, let e = error as? BlobStoreError, Self.isVerificationFailure(e) {
                    registry.reportInvalidContent(from: servedBy, object: fill.digest.description, "blob \(fill.digest): \(e)")
                }
            }
        }
        budget.settle(reserved: reserved, stored: stored)
        if sink.outOfSpace || failure?.message.contains("no space left") == true {
            logger.error("storage file system is full; starting eviction", metadata: ["digest": "\(fill.digest)"])
            budget.trigger(.noSpace)
        }
        if failure == nil {
            metrics.fillVerified.increment()
        } else if mismatch {
            metrics.fillDigestMismatch.increment()
        } else {
            metrics.fillAborted.increment()
        }
        if let failure {
            failures.add(1, ordering: .relaxed)
            // A blob the upstream does not have is the client's business, not an operator's.
            let level: Logger.Level = failure.code == .blobUnknown ? .info : .error
            logger.log(level: level, "blob fill failed", metadata: [
                "digest": "\(fill.digest)", "registry": "\(registry.name)", "repository": "\(name)", "error": "\(failure)",
            ])
        }
        await slots.release()
    }
}

extension BlobFills {
    static func isVerificationFailure(_ e: BlobStoreError) -> Bool {
        switch e {
        case .digestMismatch, .sizeMismatch, .contentChanged: true
        default: false
        }
    }
}

/// Connects an upstream transfer to a fill writer, on the transfer thread.
final class FillSink: BodySink, @unchecked Sendable {
    let writer: BlobFillWriter
    /// Set on the transfer thread when the sink refuses a response; read after the transfer ends.
    private(set) var failure: DistributionError?
    private(set) var mediaType = MediaType.octetStream
    /// Set once any 2xx response head arrived (clients waiting for the size have had their answer).
    private(set) var answered = false
    /// Asks the cache budget whether a blob of this many bytes is kept (it may evict first).
    let admit: (Int64) -> Bool
    /// Set once the announced size went through `admit`.
    private(set) var admitted = false
    /// Bytes reserved in the budget by that admission (0 when not kept).
    private(set) var reserved: Int64 = 0
    /// Set when a write failed for lack of space (ENOSPC / EDQUOT).
    private(set) var outOfSpace = false
    /// Body bytes received from upstreams, every attempt counted (for `cove_upstream_received_bytes_total`).
    private(set) var received: Int64 = 0
    /// Told the endpoint (`host:port`) before each attempt.
    var onAttempt: ((String) -> Void)?

    func attempting(endpoint: String) { onAttempt?(endpoint) }

    init(writer: BlobFillWriter, admit: @escaping (Int64) -> Bool = { _ in true }) {
        self.writer = writer
        self.admit = admit
    }

    /// Runs the budget's admission once, when the size is first known.
    private func admitOnce(_ size: Int64?) {
        guard !admitted, let size else { return }
        admitted = true
        writer.keep = admit(size)
        if writer.keep { reserved = size }
    }

    func begin(_ head: ResponseHead) -> Bool {
        answered = true
        if let ct = head["Content-Type"], !ct.isEmpty { mediaType = ct }
        // A web server or captive portal answers any path with a page: never stream that to a client as a blob.
        if MediaType.isHTML(head["Content-Type"]) {
            failure = DistributionError(.unavailable, "upstream answered Content-Type text/html for blob \(writer.digest), not the blob", status: 502)
            return false
        }
        do {
            if head.status == 206 {
                // Resumed: the range must start where we are; the total comes from Content-Range.
                guard let range = head["Content-Range"], let (start, total) = Self.parseContentRange(range),
                      start == writer.bytesWritten else {
                    failure = DistributionError(.unavailable, "upstream answered a resume with an unusable Content-Range")
                    return false
                }
                if let total { try writer.expect(size: total) }
                admitOnce(total)
            } else {
                if writer.bytesWritten > 0 { writer.restart() }
                try writer.expect(size: head.contentLength)
                admitOnce(head.contentLength)
            }
            // After admission, which measures free space: a blob that is kept gets its blocks reserved.
            if writer.keep { writer.preallocate() }
            return true
        } catch {
            failure = refusal(error)
            return false
        }
    }

    private func refusal(_ error: BlobStoreError) -> DistributionError {
        if case .contentChanged = error {
            // Bad bytes from the upstream, like a digest mismatch (README error table: 502).
            return DistributionError(.unavailable, "blob \(writer.digest) failed verification: \(error)", status: 502)
        }
        if case .tooLarge(let limit) = error {
            return DistributionError(.sizeInvalid, "blob exceeds this mirror's size limit of \(limit) bytes")
        }
        if case .noSpace = error {
            outOfSpace = true
            return DistributionError(.unavailable, "the mirror's cache storage is full; try again shortly", status: 503)
        }
        return DistributionError(.unavailable, "cannot store blob: \(error)")
    }

    func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        received += Int64(bytes.count)
        do {
            try writer.append(bytes)
            return true
        } catch {
            failure = refusal(error)
            return false
        }
    }

    /// `bytes START-END/TOTAL` → (START, TOTAL or nil for `*`).
    static func parseContentRange(_ value: String) -> (Int64, Int64?)? {
        guard value.hasPrefix("bytes ") else { return nil }
        let spec = value.dropFirst(6)
        let parts = spec.split(separator: "/")
        guard parts.count == 2, let dash = parts[0].firstIndex(of: "-"), let start = Int64(parts[0][..<dash]) else { return nil }
        return (start, Int64(parts[1]))
    }
}
