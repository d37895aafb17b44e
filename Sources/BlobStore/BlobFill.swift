import Foundation
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One blob being written into the store while any number of readers stream it as it grows.
///
/// The single writer (`writer`, driven from the transfer thread) appends bytes to a temp file and hashes them
/// as they land (for large blobs on two threads of their own, `FillPipeline`). Readers wait for bytes with
/// `waitForBytes(atLeast:)` and `pread` them from the same file, or copy them from the pipeline's ring while it
/// holds them (received bytes are visible there before they are written).
/// The last byte is withheld from readers until `BlobFillWriter.commit()` has verified digest and size, so no
/// reader can ever send a complete body of a blob that fails verification (docs/ARCHITECTURE.md, "a fill belongs to the
/// cache"). On failure the temp file is unlinked and every waiting reader gets the error.
public final class BlobFill: Sendable {
    /// The digest the bytes must hash to.
    public let digest: Digest
    /// Read/write descriptor of the temp file; stays valid after rename or unlink until this object dies.
    /// Readers may `dup` it to `sendfile` bytes below `bytesInFile`; never close it.
    public let fd: Int32
    let tmpPath: String
    let store: BlobStore
    let state: Mutex<State>

    /// Where a fill stands.
    public enum Phase: Sendable, Equatable {
        case filling
        /// Digest and size verified: every byte may be sent. (Committing to the store may still be under way.)
        case verified
        /// The fill failed; readers get this error (what a client should be told).
        case failed(DistributionError)
    }

    struct Waiter {
        let id: UInt64
        let threshold: Int64
        let continuation: CheckedContinuation<Int64, any Error>
    }

    struct State {
        /// Bytes received so far (in the temp file, or still in the pipeline's ring on their way there).
        var received: Int64 = 0
        /// Bytes written to the temp file so far (≤ `received`; never lowered: a restarted body rewrites the
        /// same content-addressed bytes, and verification still guards the whole).
        var inFile: Int64 = 0
        /// Readers sending from `fd` with `sendfile` right now (`beginFileReads`).
        var fileReaders = 0
        /// A failed fill's file is cut to 0 bytes once the last of them is done.
        var truncateWhenUnread = false
        var expectedSize: Int64?
        var headKnown = false
        var phase: Phase = .filling
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0
        var headWaiters: [CheckedContinuation<Int64?, any Error>] = []

        /// Bytes a reader may send: everything once verified, all but the last byte before.
        var visible: Int64 { phase == .verified ? received : max(0, received - 1) }
    }

    /// Creates the temp file for a fill of `digest`.
    /// - Throws: `BlobStoreError.io` when the temp file cannot be created.
    public init(store: BlobStore, digest: Digest) throws(BlobStoreError) {
        self.digest = digest
        self.store = store
        tmpPath = store.tmpDirectory.path + "/" + digest.hex.prefix(16) + "-" + UUID().uuidString
        fd = Glibc.open(tmpPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("cannot create \(tmpPath): \(String(cString: strerror(errno)))") }
        state = Mutex(State())
    }

    /// The temp file's path relative to the storage root (`tmp/<name>`).
    public var temporaryPath: String { "tmp/" + (tmpPath as NSString).lastPathComponent }

    /// The writing side. Call once and hand the result to exactly one producer.
    public func makeWriter() -> BlobFillWriter { BlobFillWriter(fill: self) }

    deinit {
        close(fd)
        if case .filling = state.withLock({ $0.phase }) { unlink(tmpPath) }
    }

    /// Waits until the size is known: the upstream announced it, or the fill verified.
    /// - Returns: the blob size in bytes, or nil if the upstream sent no length and the fill is still running
    ///   (never: a fill without a length resolves this only at commit).
    /// - Throws: the fill's `DistributionError` when it failed first.
    public func waitForSize() async throws -> Int64 {
        while true {
            let size: Int64? = try await withCheckedThrowingContinuation { c in
                let resume: Result<Int64?, any Error>? = state.withLock { s in
                    switch s.phase {
                    case .verified: return .success(s.received)
                    case .failed(let e): return .failure(e)
                    case .filling:
                        if s.headKnown, let e = s.expectedSize { return .success(e) }
                        s.headWaiters.append(c)
                        return nil
                    }
                }
                if let resume { c.resume(with: resume) }
            }
            if let size { return size }
        }
    }

    /// Waits until at least `threshold` bytes may be sent (or the fill ends).
    /// - Returns: the number of bytes readers may send now (may exceed `threshold`; once verified, the whole size).
    /// - Throws: the fill's `DistributionError` when it fails.
    /// - Parameter gone: fires when the reader's client went away; the wait then ends with `CancellationError`
    ///   (as it does when the task is cancelled), so a stalled fill does not keep parked requests alive.
    /// - Throws: `CancellationError` when `gone` fired or the task was cancelled.
    public func waitForBytes(atLeast threshold: Int64, gone: ReaderGone? = nil) async throws -> Int64 {
        let id = state.withLock { s in s.nextWaiterID += 1; return s.nextWaiterID }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { c in
                let resume: Result<Int64, any Error>? = state.withLock { s in
                    if case .failed(let e) = s.phase { return .failure(e) }
                    if s.visible >= threshold || s.phase == .verified { return .success(s.visible) }
                    if Task.isCancelled || gone?.hasFired == true { return .failure(CancellationError()) }
                    s.waiters.append(Waiter(id: id, threshold: threshold, continuation: c))
                    return nil
                }
                if let resume { c.resume(with: resume) }
                gone?.onFire { [weak self] in self?.abandon(id) }
            }
        } onCancel: {
            abandon(id)
        }
    }

    /// Ends the wait of reader `id`, if it is still parked, with `CancellationError`.
    private func abandon(_ id: UInt64) {
        let waiter = state.withLock { s -> Waiter? in
            guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.waiters.remove(at: i)
        }
        waiter?.continuation.resume(throwing: CancellationError())
    }

    /// Bytes received so far (progress; may drop to 0 when an upstream restarts the body).
    public var bytesWritten: Int64 { state.withLock { $0.received } }

    /// The temp file holds every byte below this offset (they may be sent from `fd`, e.g. with `sendfile`, as far
    /// as `waitForBytes` made them visible).
    public var bytesInFile: Int64 { state.withLock { $0.inFile } }

    /// Where the bytes come from (an upstream endpoint's `host:port`), for access logs and status; set by the
    /// fill's driver before each attempt.
    public var sourceLabel: String? {
        get { source.withLock { $0 } }
        set { source.withLock { $0 = newValue } }
    }
    private let source = Mutex<String?>(nil)

    /// The size the upstream announced, once known (nil before the response head, or without a length).
    public var announcedSize: Int64? { state.withLock { $0.expectedSize } }

    /// Readers parked in `waitForBytes` right now.
    public var parkedReaders: Int { state.withLock { $0.waiters.count } }

    /// Reads up to `buffer.count` bytes at `offset` of the blob being filled. Only call for bytes that
    /// `waitForBytes` reported visible. While the fill's pipeline runs, recent bytes come from its ring (they
    /// may not be written yet); older ones are `pread` from the file.
    /// - Returns: bytes read (possibly fewer than asked), 0 at a premature end, -1 on error.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        var count = buffer.count
        if let pipeline = pipeline.withLock({ $0 }) {
            switch pipeline.copyRecent(into: buffer, at: offset) {
            case .copied(let n): return n
            case .inFile(let end): count = Int(min(Int64(count), max(0, end - offset)))
            }
        }
        return pread(fd, buffer.baseAddress, count, off_t(offset))
    }

    /// Copies up to `buffer.count` bytes at `offset` from the pipeline's ring only: a memory copy that never
    /// blocks, so callers may run it on an async task. Only call for bytes `waitForBytes` reported visible.
    /// - Returns: bytes copied, or nil when they must be read from the file (`read(into:at:)`).
    public func readRecent(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int? {
        guard let pipeline = pipeline.withLock({ $0 }), case .copied(let n) = pipeline.copyRecent(into: buffer, at: offset) else { return nil }
        return n
    }

    /// The writer's pipeline while its threads run (readers copy recent bytes from it); set by the writer.
    let pipeline = Mutex<FillPipeline?>(nil)

    // MARK: writer-side state changes

    func announce(size: Int64?) {
        let waiters = state.withLock { s -> [CheckedContinuation<Int64?, any Error>] in
            s.expectedSize = size
            s.headKnown = true
            guard size != nil else { return [] }
            defer { s.headWaiters = [] }
            return s.headWaiters
        }
        for w in waiters { w.resume(returning: size) }
    }

    /// Reserves the file's blocks for `size` bytes without changing its length (readers and the commit's size
    /// check see only what was written). Best effort: unsupported (EOPNOTSUPP) or refused, the bytes are
    /// allocated as they are written, which is what happened without it.
    func preallocate(_ size: Int64) {
        _ = Self.fallocate?(fd, Self.keepSize, 0, off_t(size))
    }

    /// glibc's `fallocate(2)` wrapper, looked up at run time: the Swift Glibc module does not declare it
    /// (it sits behind `_GNU_SOURCE`). `posix_fallocate` is no substitute: where the file system lacks support,
    /// glibc emulates it by writing zeros, which would double the writes.
    private typealias Fallocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    private static let fallocate: Fallocate? = dlsym(nil, "fallocate").map { unsafeBitCast($0, to: Fallocate.self) }
    /// `FALLOC_FL_KEEP_SIZE` (linux/falloc.h): allocate blocks, leave the file's length alone.
    private static let keepSize: Int32 = 0x01

    /// Marks a reader that sends bytes below `bytesInFile` straight from `fd` (a duplicate of it) until
    /// `endFileReads`: the file keeps its length meanwhile, even if the fill fails.
    public func beginFileReads() { state.withLock { $0.fileReaders += 1 } }

    /// Ends `beginFileReads`, after the reader's last write from the file completed.
    public func endFileReads() {
        let truncate = state.withLock { s -> Bool in
            s.fileReaders -= 1
            guard s.fileReaders == 0, s.truncateWhenUnread else { return false }
            s.truncateWhenUnread = false
            return true
        }
        if truncate { ftruncate(fd, 0) }
    }

    func wrote(upTo offset: Int64) {
        state.withLock { $0.inFile = max($0.inFile, offset) }
    }

    func advance(to received: Int64) {
        let ready = state.withLock { s -> [Waiter] in
            s.received = received
            guard !s.waiters.isEmpty else { return [] }
            let visible = s.visible
            var ready: [Waiter] = []
            s.waiters.removeAll { w in
                if w.threshold <= visible { ready.append(w); return true }
                return false
            }
            return ready
        }
        if !ready.isEmpty {
            let visible = state.withLock { $0.visible }
            for w in ready { w.continuation.resume(returning: visible) }
        }
    }

    func finish(_ phase: Phase) {
        let (waiters, headWaiters, size) = state.withLock { s in
            s.phase = phase
            defer { s.waiters = []; s.headWaiters = [] }
            return (s.waiters, s.headWaiters, s.received)
        }
        switch phase {
        case .verified:
            for w in waiters { w.continuation.resume(returning: size) }
            for w in headWaiters { w.resume(returning: size) }
        case .failed(let e):
            // Truncate as well as unlink: readers may keep the descriptor open a while, and after ENOSPC the
            // space is needed now (by the index's eviction transaction, among others). Not under a reader's
            // `sendfile`, though: a region past the end of the file would never complete (sendfile returns 0);
            // the last of them truncates instead (`endFileReads`).
            let now = state.withLock { s -> Bool in
                if s.fileReaders > 0 { s.truncateWhenUnread = true }
                return s.fileReaders == 0
            }
            if now { ftruncate(fd, 0) }
            unlink(tmpPath)
            for w in waiters { w.continuation.resume(throwing: e) }
            for w in headWaiters { w.resume(throwing: e) }
        case .filling:
            break
        }
    }
}

/// The producing side of a `BlobFill`: appends and hashes bytes, then verifies and commits.
///
/// Not thread-safe by design: exactly one producer (the upstream transfer thread) drives it, one call at a
/// time; it is `@unchecked Sendable` only so that producer can be handed to that thread. Blobs larger than
/// `pipelineThreshold` are written and hashed by a `FillPipeline` (two threads, a 4 MiB ring) while the
/// producer receives the next bytes; smaller ones inline.
public final class BlobFillWriter: @unchecked Sendable {
    /// Blobs announced (or grown) larger than this many bytes go through the pipeline's threads.
    static let pipelineThreshold: Int64 = 1 << 20

    let fill: BlobFill
    private let pipeline: FillPipeline
    private var written: Int64 = 0
    /// After a restart, the temp file's bytes below this offset are an earlier attempt's, which readers may already
    /// have sent: the restarted body must repeat them exactly (checked as it arrives) or the fill fails, since
    /// verification covers only the restarted body.
    private var earlierEnd: Int64 = 0
    private var expectedSize: Int64?
    /// The largest blob accepted, in bytes (nil: no limit).
    public var sizeLimit: Int64?
    /// The upstream the bytes came from (named in the error readers get when they fail verification).
    public var source: String?
    /// The digest being filled.
    public var digest: Digest { fill.digest }
    /// Set when the caller verified the digest by another rule (a signed schema 1 manifest's digest covers
    /// its payload, not the bytes stored): `commit` then checks only the size.
    var digestVerifiedByCaller = false
    /// False to stream the blob to its readers and then discard it instead of committing it (the cache's
    /// budget cannot hold it). Set before `commit`.
    public var keep = true
    /// Runs right before the verified file is renamed into the store (the mirror waits there for an
    /// eviction of the same digest to finish unlinking).
    public var beforeCommit: (@Sendable () -> Void)?

    init(fill: BlobFill) {
        self.fill = fill
        pipeline = FillPipeline(fd: fill.fd, path: fill.tmpPath, algorithm: fill.digest.algorithm,
                                onReceived: { fill.advance(to: $0) }, onWritten: { fill.wrote(upTo: $0) })
    }

    deinit {
        // Normally `commit` or `fail` stopped it; a writer dropped mid-fill must not leave threads behind.
        stopPipeline(abort: true)
    }

    /// Hands the bytes from here on to the pipeline's threads (once), and lets readers copy from its ring.
    private func startPipeline() {
        guard !pipeline.started else { return }
        pipeline.start(at: written)
        if pipeline.started { fill.pipeline.withLock { $0 = pipeline } }
    }

    private func stopPipeline(abort: Bool) {
        fill.pipeline.withLock { $0 = nil }
        pipeline.stop(abort: abort)
    }

    /// Bytes appended so far.
    public var bytesWritten: Int64 { written }

    /// Records the size the upstream announced (Content-Length of a full 200 response); nil when unknown.
    /// - Throws: `BlobStoreError.tooLarge` when it exceeds `sizeLimit`.
    /// A large known size starts the pipeline's threads at once.
    public func expect(size: Int64?) throws(BlobStoreError) {
        if let size, let sizeLimit, size > sizeLimit { throw .tooLarge(limit: sizeLimit) }
        expectedSize = size
        if let size, size > Self.pipelineThreshold { startPipeline() }
        fill.announce(size: size)
    }

    /// Reserves the temp file's blocks for the announced size (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so the
    /// fill cannot run out of space midway and the file system allocates it in one piece. Best effort: without
    /// an announced size, or where the file system cannot, the bytes are allocated as they land. Call after the
    /// cache budget admitted the size (it measures free space, which this takes).
    public func preallocate() {
        if let expectedSize, expectedSize > written { fill.preallocate(expectedSize) }
    }

    /// Starts over from byte 0 (the upstream ignored a resume Range and sent the whole blob again).
    public func restart() {
        pipeline.restart()
        // After the drain in `pipeline.restart`: every earlier byte is in the file.
        earlierEnd = max(earlierEnd, Self.fileSize(fill.fd))
        written = 0
        // No truncation: readers keep their offsets (and may be reading or sending the file's bytes right now);
        // the same content-addressed bytes are rewritten, and the final verification still guards the whole
        // (`commit` also refuses a file longer than the restarted body).
    }

    /// Writes `bytes` at the end of the temp file and hashes them.
    /// - Throws: `BlobStoreError.io` on a write error, `.tooLarge` past `sizeLimit`, `.sizeMismatch` past the
    ///   announced size, `.contentChanged` when a restarted body differs from the earlier attempt's bytes.
    public func append(_ bytes: UnsafeRawBufferPointer) throws(BlobStoreError) {
        let newTotal = written + Int64(bytes.count)
        if let expectedSize, newTotal > expectedSize { throw .sizeMismatch(expected: expectedSize, actual: newTotal) }
        if let sizeLimit, newTotal > sizeLimit { throw .tooLarge(limit: sizeLimit) }
        guard !bytes.isEmpty else { return }
        if written < earlierEnd { try matchEarlierAttempt(bytes) }
        if newTotal > Self.pipelineThreshold { startPipeline() }
        try pipeline.append(bytes, at: written)
        written = newTotal
    }

    /// Verifies digest and size and releases the last byte to readers, then fsyncs and renames the file into
    /// the store. Readers are released before the fsync: what they need is verified bytes, and durability is
    /// the cache's concern (an fsync of a large blob takes as long as the transfer).
    /// With `keep` false the verified bytes go to the readers and the temp file is unlinked instead.
    /// - Returns: true when the file was committed to the store, false when it was discarded (`keep`).
    /// - Throws: `.digestMismatch` or `.sizeMismatch` (the fill is then failed, its temp file gone, readers
    ///   aborted), `.noSpace` when fsync hits ENOSPC, or `.io` when fsync or rename fails (readers still
    ///   finish; nothing is stored).
    @discardableResult
    public func commit() throws(BlobStoreError) -> Bool {
        do throws(BlobStoreError) {
            try pipeline.drain()
        } catch {
            // The last bytes could not be written: the fill fails like a write error during the transfer.
            fail(DistributionError(.unavailable, "blob \(fill.digest): \(error)", status: 503))
            throw error
        }
        stopPipeline(abort: false)
        do {
            if let expectedSize, expectedSize != written { throw BlobStoreError.sizeMismatch(expected: expectedSize, actual: written) }
            // A body restarted from byte 0 (not truncated: readers may be sending the file) that ended short of the
            // first attempt's bytes: those were not this blob's, and readers may have sent them.
            if earlierEnd > written { throw BlobStoreError.sizeMismatch(expected: written, actual: earlierEnd) }
            let actual = pipeline.hasher.finalize()
            guard actual == fill.digest || digestVerifiedByCaller else { throw BlobStoreError.digestMismatch(expected: fill.digest, actual: actual) }
        } catch let error as BlobStoreError {
            // 502: the upstream sent bad bytes (README error table), naming it when known.
            fail(DistributionError(.unavailable, "blob \(fill.digest) failed verification\(source.map { " (from \($0))" } ?? ""): \(error)", status: 502))
            throw error
        } catch {
            fail(DistributionError(.unavailable, "blob \(fill.digest) failed verification: \(error)"))
            throw .io("\(error)")
        }
        fill.finish(.verified)
        guard keep else {
            // Readers keep reading through their descriptor; the bytes go when the last of them is done.
            unlink(fill.tmpPath)
            return false
        }
        guard fsync(fill.fd) == 0 else {
            let e = errno
            unlink(fill.tmpPath)
            let message = "fsync \(fill.tmpPath): \(String(cString: strerror(e)))"
            throw e == ENOSPC || e == EDQUOT ? .noSpace(message) : .io(message)
        }
        beforeCommit?()
        do {
            try fill.store.commit(tmp: fill.tmpPath, as: fill.digest)
        } catch {
            unlink(fill.tmpPath)
            throw error
        }
        return true
    }

    /// Compares the start of `bytes` (due at `written`) with what the file holds there from an earlier attempt,
    /// up to `earlierEnd`. Those file bytes are not overwritten yet: the pipeline writes only below `written`.
    /// - Throws: `.contentChanged` at the first differing byte, `.io` when the file cannot be read.
    private func matchEarlierAttempt(_ bytes: UnsafeRawBufferPointer) throws(BlobStoreError) {
        let count = Int(min(Int64(bytes.count), earlierEnd - written))
        let step = min(count, 256 << 10)
        var failure: BlobStoreError?
        withUnsafeTemporaryAllocation(byteCount: step, alignment: 16) { scratch in
            var done = 0
            while done < count {
                let n = min(step, count - done)
                let got = pread(fill.fd, scratch.baseAddress, n, off_t(written) + off_t(done))
                if got < 0, errno == EINTR { continue }
                guard got > 0 else {
                    failure = .io("read \(fill.tmpPath) at \(written + Int64(done)) failed: \(got < 0 ? String(cString: strerror(errno)) : "end of file")")
                    return
                }
                if memcmp(scratch.baseAddress!, bytes.baseAddress! + done, got) != 0 {
                    let first = (0..<got).first { scratch[$0] != bytes[done + $0] } ?? 0
                    failure = .contentChanged(offset: written + Int64(done + first))
                    return
                }
                done += got
            }
        }
        if let failure { throw failure }
    }

    private static func fileSize(_ fd: Int32) -> Int64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int64(st.st_size) : 0
    }

    /// Fails the fill: unlinks the temp file and wakes every reader with the error.
    public func fail(_ error: DistributionError) {
        stopPipeline(abort: true)
        fill.finish(.failed(error))
    }
}

/// Fires once when the client of a reader went away (the connection closed or its input ended). A reader
/// parked on a fill registers with it so it stops waiting; used by the HTTP front, which sees the connection.
/// One per reader: each wait replaces the previous wait's action (those waits have ended).
public final class ReaderGone: Sendable {
    private let state = Mutex<(fired: Bool, action: (@Sendable () -> Void)?)>((false, nil))

    public init() {}

    /// True once `fire()` ran.
    public var hasFired: Bool { state.withLock { $0.fired } }

    /// Runs `action` when the client goes away (at once if it already has), instead of any earlier action.
    public func onFire(_ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.fired { return true }
            s.action = action
            return false
        }
        if now { action() }
    }

    /// Marks the client gone and runs the registered action (once).
    public func fire() {
        let action = state.withLock { s -> (@Sendable () -> Void)? in
            guard !s.fired else { return nil }
            s.fired = true
            defer { s.action = nil }
            return s.action
        }
        action?()
    }
}
