import Foundation
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// Moves a fill's bytes from the transfer thread into the temp file and the digest, in parallel.
///
/// The transfer thread only copies each received chunk into a byte ring (`capacity`, 4 MiB) and returns to the
/// socket. A writer thread `pwrite`s what the ring holds to the file in large batches (up to 1 MiB; it waits a
/// few milliseconds for at least 128 KiB so a fast upstream gets large writes and a slow one is not delayed),
/// and a hasher thread feeds the same bytes to the digest. Ring space is reused once both have passed it: the
/// transfer thread blocks, and TCP pushes back on the upstream, only when the disk or the hash falls behind.
/// Memory is the ring, whatever the blob's size. Before `start` (small blobs) every call writes and hashes
/// inline on the caller's thread, as no thread start-up is worth it there.
///
/// Written bytes are reported in order through `onWritten` (the file offset everything below is written up to),
/// from the writer thread. Errors of either thread are kept and thrown by the next `append` or by `drain`.
/// One producer drives `append`, `drain`, `restart` and `stop`, one call at a time.
final class FillPipeline: @unchecked Sendable {
    /// Ring size in bytes.
    static let capacity = 4 << 20
    /// Largest single write or hash step, in bytes.
    static let batch = 1 << 20
    /// The writer waits up to `batchWait` for this many bytes before writing less.
    static let minimumBatch = 128 << 10
    static let batchWait = 0.004
    /// Off (`COVE_FILL_PIPELINE=0`): every fill writes and hashes inline on the transfer thread, as before the
    /// pipeline existed. A benchmarking aid for same-binary comparisons (bench/RESULTS.md), not a setting.
    static let enabled = ProcessInfo.processInfo.environment["COVE_FILL_PIPELINE"] != "0"

    let fd: Int32
    let path: String
    private let onWritten: @Sendable (Int64) -> Void
    /// The digest state: the hasher thread's while threads run, the producer's otherwise (after `drain`).
    private(set) var hasher: DigestHasher

    private let lock = NSCondition()
    // Guarded by `lock`. Positions count bytes since `base` (a file offset); ring index = position % capacity.
    private var ring: UnsafeMutableRawPointer?
    private var base: Int64 = 0
    private var produced = 0
    /// `produced` plus the bytes the producer is copying in right now (ring space below `claimed - capacity`
    /// may be overwritten at any moment).
    private var claimed = 0
    private var written = 0
    private var hashed = 0
    private var flushing = false
    private var stopping = false
    private var aborting = false
    private var running = 0
    private var failure: BlobStoreError?

    /// Whether the threads run (`start` was called and `stop` not yet).
    private(set) var started = false

    init(fd: Int32, path: String, algorithm: Digest.Algorithm, onWritten: @escaping @Sendable (Int64) -> Void) {
        self.fd = fd
        self.path = path
        self.onWritten = onWritten
        hasher = DigestHasher(algorithm)
    }

    deinit { ring?.deallocate() }

    /// Starts the writer and hasher threads; later bytes continue at file offset `offset` (everything before
    /// it was written and hashed inline).
    func start(at offset: Int64) {
        guard !started, Self.enabled else { return }
        started = true
        base = offset
        produced = 0; claimed = 0; written = 0; hashed = 0
        stopping = false; aborting = false; failure = nil
        ring = .allocate(byteCount: Self.capacity, alignment: 4096)
        running = 2
        for (name, work) in [("cove-fill-write", Work.write), ("cove-fill-hash", Work.hash)] {
            let t = Thread { self.consume(work) }
            t.name = name
            t.stackSize = 256 << 10
            t.start()
        }
    }

    /// Hands `bytes`, which belong at file offset `offset`, to the pipeline (or writes and hashes them at once
    /// before `start`). Blocks while the ring is full.
    /// - Throws: the first error of the writer (`.noSpace`, `.io`), then every time.
    func append(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(BlobStoreError) {
        guard started else {
            try Self.writeAll(fd, bytes.baseAddress!, bytes.count, at: offset, path: path)
            hasher.update(bytes)
            onWritten(offset + Int64(bytes.count))
            return
        }
        var done = 0
        while done < bytes.count {
            lock.lock()
            while produced - min(written, hashed) >= Self.capacity, failure == nil { lock.wait() }
            if let failure { lock.unlock(); throw failure }
            let free = Self.capacity - (produced - min(written, hashed))
            let at = produced % Self.capacity
            let n = min(bytes.count - done, free, Self.capacity - at)
            let ring = ring!
            claimed = produced + n
            lock.unlock()
            // Only this thread writes ring space past `produced`, and no consumer reads it before the update.
            memcpy(ring + at, bytes.baseAddress! + done, n)
            lock.lock()
            produced += n
            lock.broadcast()
            lock.unlock()
            done += n
        }
    }

    /// Waits until every byte handed over is written and hashed.
    /// - Throws: the writer's first error.
    func drain() throws(BlobStoreError) {
        guard started else { return }
        lock.lock()
        flushing = true
        lock.broadcast()
        while failure == nil, written < produced || hashed < produced { lock.wait() }
        flushing = false
        let failure = failure
        lock.unlock()
        if let failure { throw failure }
    }

    /// Forgets everything (the upstream sent the blob again from byte 0): waits for the threads to go idle,
    /// then starts a fresh digest at file offset 0. A write error already seen stays.
    func restart() {
        try? drain()
        lock.lock()
        base = 0
        produced = 0; claimed = 0; written = 0; hashed = 0
        hasher = DigestHasher(hasher.algorithm)
        lock.unlock()
    }

    /// Ends the threads and frees the ring; with `abort`, bytes not yet written are dropped. Idempotent.
    func stop(abort: Bool) {
        guard started else { return }
        lock.lock()
        stopping = true
        if abort { aborting = true }
        lock.broadcast()
        while running > 0 { lock.wait() }
        ring?.deallocate()
        ring = nil
        lock.unlock()
        started = false
    }

    /// Copies `buffer.count` bytes at file offset `offset` from the ring, when they were written to the file
    /// and the ring still holds them: a reader close behind the fill gets them without a `pread` of the page
    /// cache. The copy runs under the lock (at most `buffer.count` bytes, typically 256 KiB), so the producer
    /// cannot overwrite them meanwhile.
    /// - Returns: bytes copied, or nil when the caller must `pread` instead.
    func copyRecent(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int? {
        guard !buffer.isEmpty else { return nil }
        lock.lock()
        defer { lock.unlock() }
        guard let ring, offset >= base else { return nil }
        let position = Int(offset - base)
        guard position + buffer.count <= written, position >= claimed - Self.capacity else { return nil }
        let at = position % Self.capacity
        let first = min(buffer.count, Self.capacity - at)
        memcpy(buffer.baseAddress!, ring + at, first)
        if first < buffer.count { memcpy(buffer.baseAddress! + first, ring, buffer.count - first) }
        return buffer.count
    }

    private enum Work { case write, hash }

    /// A consumer thread's loop: takes the next run of ring bytes after its own position and writes or hashes it.
    private func consume(_ work: Work) {
        lock.lock()
        var waitingSince: Date?
        while true {
            if aborting || failure != nil { break }
            let position = work == .write ? written : hashed
            let pending = produced - position
            if pending == 0 {
                if stopping { break }
                lock.wait()
                continue
            }
            if work == .write, pending < Self.minimumBatch, !flushing, !stopping {
                let since = waitingSince ?? Date()
                waitingSince = since
                let until = since.addingTimeInterval(Self.batchWait)
                if Date() < until { _ = lock.wait(until: until); continue }
            }
            waitingSince = nil
            let at = position % Self.capacity
            let n = min(pending, Self.capacity - at, Self.batch)
            let offset = base + Int64(position)
            let bytes = UnsafeRawBufferPointer(start: ring! + at, count: n)
            lock.unlock()
            var error: BlobStoreError?
            switch work {
            case .write:
                do { try Self.writeAll(fd, bytes.baseAddress!, n, at: offset, path: path) } catch let e { error = e }
            case .hash:
                hasher.update(bytes)
            }
            lock.lock()
            if let error {
                failure = failure ?? error
                lock.broadcast()
                break
            }
            // A `restart` in between cannot happen: it drains first, and this run was pending.
            if work == .write {
                written += n
                // Told under the lock, so a `restart` right after cannot be overtaken by a stale offset.
                onWritten(base + Int64(written))
            } else {
                hashed += n
            }
            lock.broadcast()
        }
        running -= 1
        lock.broadcast()
        lock.unlock()
    }

    /// `pwrite`s all `count` bytes at `offset`, retrying on EINTR and short writes.
    /// - Throws: `.noSpace` on ENOSPC / EDQUOT, `.io` otherwise.
    static func writeAll(_ fd: Int32, _ start: UnsafeRawPointer, _ count: Int, at offset: Int64, path: String) throws(BlobStoreError) {
        var done = 0
        while done < count {
            let n = pwrite(fd, start + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == ENOSPC || e == EDQUOT { throw .noSpace("write to \(path) failed: \(String(cString: strerror(e)))") }
                throw .io("write to \(path) failed: \(String(cString: strerror(e)))")
            }
            done += n
        }
    }
}
