import Foundation
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Content-addressed files on disk: `<root>/blobs/<algorithm>/<2 hex>/<hex>` for manifests and blobs alike,
/// byte-exact, plus `<root>/tmp/` for fills in flight.
///
/// Files enter `blobs/` only by an atomic rename after their digest and size verified (see `BlobFill`), so a
/// file under `blobs/` is always complete and correct, whatever crashed when.
public struct BlobStore: Sendable {
    /// The storage root directory.
    public let root: URL
    /// Held for the store's lifetime: one process per storage directory.
    private let lock: StorageLock

    /// Opens (creating if needed) the store under `root`, takes its lock, and removes orphaned temp files of
    /// fills that were in flight when a previous process died.
    /// - Parameter removingTemporaryFiles: false for maintenance commands (`cove verify`), which report the
    ///   leftovers instead of silently deleting them.
    /// - Throws: `BlobStoreError.inUse` when another process holds the storage (its fills must not be
    ///   deleted), `.io` when the directories cannot be created.
    public init(root: URL, removingTemporaryFiles: Bool = true) throws(BlobStoreError) {
        self.root = root
        for dir in [root.appendingPathComponent("blobs"), root.appendingPathComponent("tmp")] {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw .io("cannot create \(dir.path): \(error.localizedDescription)")
            }
        }
        lock = try StorageLock(path: root.appendingPathComponent("lock").path)
        if removingTemporaryFiles, let orphans = try? FileManager.default.contentsOfDirectory(atPath: tmpDirectory.path) {
            for name in orphans { unlink(tmpDirectory.appendingPathComponent(name).path) }
        }
    }

    var tmpDirectory: URL { root.appendingPathComponent("tmp") }

    /// The path of the committed file for `digest` (it may not exist).
    public func path(for digest: Digest) -> String {
        let hex = digest.hex
        return root.path + "/blobs/" + digest.algorithm.rawValue + "/" + hex.prefix(2) + "/" + hex
    }

    /// Opens the committed file for `digest` for reading.
    /// - Returns: the open file; `.failure(.missing)` only when the store does not hold it (ENOENT).
    ///   Any other failure (EMFILE, EACCES, EIO, ...) is `.io`: the content may well be there, so callers
    ///   must not forget it.
    public func open(_ digest: Digest) -> Result<BlobFile, BlobOpenError> {
        let fd = Glibc.open(path(for: digest), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            return .failure(errno == ENOENT ? .missing : .io(String(cString: strerror(errno))))
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = String(cString: strerror(errno))
            Glibc.close(fd)
            return .failure(.io(e))
        }
        return .success(BlobFile(fd: fd, size: Int64(st.st_size)))
    }

    /// Releases the storage lock; the store must not be used afterwards.
    public func close() { lock.release() }

    /// True when a committed file for `digest` exists.
    public func contains(_ digest: Digest) -> Bool {
        access(path(for: digest), F_OK) == 0
    }

    /// Reads a whole committed file (for manifests, which are small).
    /// - Returns: the bytes; `.missing` when absent; `.io` when it could not be read (including a short read).
    public func read(_ digest: Digest) -> Result<[UInt8], BlobOpenError> {
        switch open(digest) {
        case .failure(let e): return .failure(e)
        case .success(let file):
            var out = [UInt8](repeating: 0, count: Int(file.size))
            let n = out.withUnsafeMutableBytes { file.read(into: $0, at: 0) }
            return n == Int(file.size) ? .success(out) : .failure(.io("short read"))
        }
    }

    /// Removes the committed file for `digest` (used when the index and the disk disagree).
    public func remove(_ digest: Digest) { unlink(path(for: digest)) }

    /// Stores `bytes` whole after checking they hash to `digest`.
    /// - Throws: `BlobStoreError.digestMismatch` or `.io`.
    public func put(_ bytes: [UInt8], as digest: Digest) throws(BlobStoreError) {
        try put(bytes, as: digest, digestVerified: false)
    }

    /// Stores a manifest's bytes under its digest as `ManifestDigest.of` computes it (for a signed schema 1
    /// manifest, the digest of its payload, so the stored file does not hash to its own name).
    /// - Throws: `BlobStoreError.digestMismatch` when the manifest's digest is not `digest`, or `.io`.
    public func putManifest(_ bytes: [UInt8], mediaType: String, as digest: Digest) throws(BlobStoreError) {
        let actual = ManifestDigest.of(bytes, mediaType: mediaType, algorithm: digest.algorithm)
        guard actual == digest else { throw .digestMismatch(expected: digest, actual: actual) }
        try put(bytes, as: digest, digestVerified: true)
    }

    private func put(_ bytes: [UInt8], as digest: Digest, digestVerified: Bool) throws(BlobStoreError) {
        let fill = try BlobFill(store: self, digest: digest)
        let writer = fill.makeWriter()
        writer.digestVerifiedByCaller = digestVerified
        do {
            try writer.expect(size: Int64(bytes.count))
            try bytes.withUnsafeBytes { raw in try writer.append(raw) }
        } catch {
            let e = error as? BlobStoreError ?? .io("\(error)")
            writer.fail(DistributionError(.unknown, e.description))
            throw e
        }
        try writer.commit()
    }

    /// Creates the directories a committed file for `digest` goes into and renames `tmp` there, then fsyncs
    /// the directory so the rename survives a crash.
    func commit(tmp: String, as digest: Digest) throws(BlobStoreError) {
        let final = path(for: digest)
        let dir = (final as NSString).deletingLastPathComponent
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw .io("cannot create \(dir): \(error.localizedDescription)")
        }
        guard rename(tmp, final) == 0 else { throw .io("rename to \(final) failed: \(String(cString: strerror(errno)))") }
        let dfd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { fsync(dfd); Glibc.close(dfd) }
    }
}

/// An exclusive `flock` on `<storage>/lock`, released when the process exits or the store is dropped.
final class StorageLock: Sendable {
    let fd: Int32
    private let released = Mutex(false)

    init(path: String) throws(BlobStoreError) {
        // `self.fd` is set only once the lock is held: a class whose stored properties are all initialised runs
        // `deinit` when its init throws, and that would close the descriptor a second time (by then perhaps a
        // number another thread was given: seen as NIO trapping in epoll registration).
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw .inUse("storage \((path as NSString).deletingLastPathComponent) is in use by another Cove process")
        }
        self.fd = fd
    }

    /// Gives the storage up (idempotent); used on shutdown so another process may take it at once.
    func release() {
        let first = released.withLock { r in defer { r = true }; return !r }
        if first { close(fd) }
    }

    deinit { release() }
}

/// Why a committed file could not be opened.
public enum BlobOpenError: Error, Sendable, Equatable {
    /// Not in the store.
    case missing
    /// There, perhaps, but unreadable now (the errno text): out of descriptors, permissions, I/O error.
    case io(String)
}

/// An open, read-only committed blob file. Closes its descriptor when released.
public final class BlobFile: Sendable {
    /// The open descriptor; valid for this object's lifetime.
    public let fd: Int32
    /// File size in bytes.
    public let size: Int64

    init(fd: Int32, size: Int64) {
        self.fd = fd
        self.size = size
    }

    /// Reads up to `buffer.count` bytes at byte `offset` with `pread`.
    /// - Returns: bytes read (0 at end of file, -1 on error).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
    }

    deinit { close(fd) }
}

/// Errors from the blob store.
public enum BlobStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A file-system operation failed; the message names the path and errno text.
    case io(String)
    /// The bytes hashed to `actual` instead of the expected digest.
    case digestMismatch(expected: Digest, actual: Digest)
    /// The byte count differs from the size the upstream or a descriptor announced.
    case sizeMismatch(expected: Int64, actual: Int64)
    /// The blob exceeds the configured maximum size in bytes.
    case tooLarge(limit: Int64)
    /// Another process holds the storage directory's lock.
    case inUse(String)
    /// The file system is full (ENOSPC) or the quota is exhausted (EDQUOT); the message names the path.
    case noSpace(String)
    /// A body restarted from byte 0 differs, at this offset, from the earlier attempt's bytes that readers may
    /// already have been sent (the upstream's content changed, or one of the attempts was corrupt).
    case contentChanged(offset: Int64)

    public var description: String {
        switch self {
        case .io(let m): "I/O error: \(m)"
        case .digestMismatch(let e, let a): "digest mismatch: expected \(e), got \(a)"
        case .sizeMismatch(let e, let a): "size mismatch: expected \(e) bytes, got \(a)"
        case .tooLarge(let l): "blob larger than the limit of \(l) bytes"
        case .inUse(let m): m
        case .noSpace(let m): "no space left on the storage file system: \(m)"
        case .contentChanged(let o): "the body sent again from byte 0 differs from the first attempt at byte \(o)"
        }
    }
}
