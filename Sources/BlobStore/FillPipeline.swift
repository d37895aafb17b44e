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
/// Written bytes are reported through `onWritten` (the file offset everything below is in the file), from the
/// writer thread. Received bytes are reported through `onReceived` (the file offset everything below is in the
/// ring or the file), from the producer's thread, as soon as they are in the ring: readers are handed bytes
/// before they are written or hashed, so a client's copy does not wait for the page-cache write (the fill still
/// withholds the blob's last byte until `drain` and the digest check). Errors of either thread are kept and
/// thrown by the next `append` or by `drain`. One producer drives `append`, `drain`, `restart` and `stop`, one
/// call at a time.
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
    private let onReceived: @Sendable (Int64) -> Void
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
    /// Readers copying out of the ring right now (outside the lock); `stop` waits for them before freeing it.
    private var copying = 0
    /// Bumped by `restart`: a reader's copy taken across it is discarded.
    private var generation = 0
    /// The file holds bytes up to here (the most ever written; a restart rewrites them without truncating).
    private var fileEnd: Int64 = 0

    /// Runs on the writer thread before each write (tests hold the writer back with it to see what readers get).
    var beforeWrite: (@Sendable () -> Void)?

    /// Whether the threads run (`start` was called and `stop` not yet).
    private(set) var started = false

    init(fd: Int32, path: String, algorithm: Digest.Algorithm, onReceived: @escaping @Sendable (Int64) -> Void,
         onWritten: @escaping @Sendable (Int64) -> Void = { _ in }) {
        self.fd = fd
        self.path = path
        self.onReceived = onReceived
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
        fileEnd = max(fileEnd, offset)
        produced = 0; claimed = 0; written = 0; hashed = 0
        stopping = false; aborting = false; failure = nil
        ring = .allocate(byteCount: Self.capacity, alignment: 4096)
        running = 2
        for (name, work) in [("cove-fill-write", Work.write), ("cove-fill-hash", Work.hash)] {
            let t = Thread {
                Self.nameCurrentThread(name)
                self.consume(work)
            }
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
            onReceived(offset + Int64(bytes.count))
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
        // Only this thread moves `produced` (and `restart` runs on it too), so reports cannot arrive out of order.
        onReceived(offset + Int64(bytes.count))
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
        generation += 1
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
        while running > 0 || copying > 0 { lock.wait() }
        ring?.deallocate()
        ring = nil
        lock.unlock()
        started = false
    }

    /// Where a reader gets bytes of a fill in flight.
    enum Recent: Equatable {
        /// This many bytes were copied from the ring.
        case copied(Int)
        /// Not in the ring (any more): `pread` them, but not at or past this file offset (bytes there are not
        /// written yet). `Int64.max` once the pipeline stopped.
        case inFile(before: Int64)
    }

    /// Copies up to `buffer.count` bytes at file offset `offset` from the ring when it holds them: received bytes
    /// are there until both the writer and the hasher passed them and the producer reuses the space, so a
    /// reader close behind the fill needs no `pread`, and bytes not yet written can only be had here.
    /// The copy runs outside the lock (32 readers must not serialise the producer); the range is checked
    /// again afterwards and, if the producer reused it meanwhile, the caller is sent to the file, which by
    /// then holds those bytes.
    func copyRecent(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Recent {
        lock.lock()
        guard let ring, offset >= base, !buffer.isEmpty else {
            let end = ring == nil ? Int64.max : fileEnd
            lock.unlock()
            return .inFile(before: end)
        }
        let position = Int(offset - base)
        guard position >= claimed - Self.capacity, position < produced else {
            let end = fileEnd
            lock.unlock()
            return .inFile(before: end)
        }
        let count = min(buffer.count, produced - position)
        let generation = generation
        copying += 1
        lock.unlock()

        let at = position % Self.capacity
        let first = min(count, Self.capacity - at)
        memcpy(buffer.baseAddress!, ring + at, first)
        if first < count { memcpy(buffer.baseAddress! + first, ring, count - first) }

        lock.lock()
        copying -= 1
        // The producer may have claimed the space while we copied; everything it may overwrite is written.
        let intact = generation == self.generation && position >= claimed - Self.capacity
        let end = fileEnd
        if copying == 0, stopping { lock.broadcast() }
        lock.unlock()
        return intact ? .copied(count) : .inFile(before: end)
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
                beforeWrite?()
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
                fileEnd = max(fileEnd, base + Int64(written))
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

    /// Gives the calling thread its kernel name (what `top -H`, `ps -L` and `perf` show): Foundation does not
    /// pass `Thread.name` on to the kernel on Linux. glibc's `pthread_setname_np` is looked up at run time, as the
    /// Swift Glibc module does not declare it (it sits behind `_GNU_SOURCE`). Names are cut to 15 bytes.
    static func nameCurrentThread(_ name: String) {
        typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
        guard let symbol = dlsym(nil, "pthread_setname_np") else { return }
        _ = unsafeBitCast(symbol, to: SetName.self)(pthread_self(), String(name.utf8.prefix(15))!)
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
