import Foundation
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// A file found under `blobs/` or `tmp/` by a scan of the store (for `cove verify` and start-up reconciliation).
public struct StoredFile: Sendable, Equatable {
    /// The digest its place in `blobs/<algorithm>/<2 hex>/<hex>` names; nil for a file that is not where a
    /// committed file can be (a wrong directory, a name that is not a digest) and for temp files.
    public var digest: Digest?
    /// Path relative to the storage root, e.g. `blobs/sha256/ab/ab12…` or `tmp/ab12…-UUID`.
    public var relativePath: String
    /// Size in bytes.
    public var size: Int64
    /// The later of its modification and status-change times: a rename into `blobs/` sets the status-change
    /// time, so this says when the file got where it is (or was last written).
    public var changedAt: Date
    /// When its content was last written (a temp file nobody writes to any more is a leftover).
    public var modifiedAt: Date
}

extension BlobStore {
    /// Every regular file under `blobs/`, in no particular order. Walks the directories with `readdir` and
    /// `lstat` (about 0.1 s per 100,000 files when the inodes are cached); memory is one entry per file.
    /// Files that vanish during the walk are skipped.
    public func committedFiles() -> [StoredFile] {
        var out: [StoredFile] = []
        for algorithm in Self.names(in: root.path + "/blobs") {
            let algDir = "blobs/" + algorithm
            let knownAlgorithm = Digest.Algorithm(rawValue: algorithm)
            for prefix in Self.names(in: root.path + "/" + algDir) {
                let prefixDir = algDir + "/" + prefix
                guard let s = stat(relative: prefixDir) else { continue }
                guard (s.st_mode & S_IFMT) == S_IFDIR else {
                    out.append(file(prefixDir, s, digest: nil))
                    continue
                }
                for name in Self.names(in: root.path + "/" + prefixDir) {
                    let relative = prefixDir + "/" + name
                    guard let s = stat(relative: relative), (s.st_mode & S_IFMT) != S_IFDIR else { continue }
                    var digest: Digest?
                    if knownAlgorithm != nil, name.hasPrefix(prefix), prefix.utf8.count == 2 {
                        digest = try? Digest(algorithm + ":" + name)
                    }
                    out.append(file(relative, s, digest: digest))
                }
            }
        }
        return out
    }

    /// Every file in `tmp/` (fills in flight, or left over by a process that died).
    public func temporaryFiles() -> [StoredFile] {
        Self.names(in: tmpDirectory.path).compactMap { name in
            let relative = "tmp/" + name
            return stat(relative: relative).map { file(relative, $0, digest: nil) }
        }
    }

    /// Unlinks a file given by its path relative to the storage root (a path `committedFiles` or
    /// `temporaryFiles` returned). Absent files are not an error.
    /// - Returns: true when the file is gone afterwards.
    @discardableResult
    public func removeFile(relativePath: String) -> Bool {
        guard !relativePath.contains("..") else { return false }
        return unlink(root.path + "/" + relativePath) == 0 || errno == ENOENT
    }

    /// Hashes the committed file for `digest` with `digest`'s algorithm, streaming through one 1 MiB buffer
    /// (memory stays bounded whatever the size).
    /// - Returns: the digest of its bytes and the number of bytes read; `.missing` when absent, `.io` when it
    ///   could not be read.
    public func hashFile(_ digest: Digest) -> Result<(digest: Digest, size: Int64), BlobOpenError> {
        switch open(digest) {
        case .failure(let e): return .failure(e)
        case .success(let file):
            var hasher = DigestHasher(digest.algorithm)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
            defer { buffer.deallocate() }
            var offset: Int64 = 0
            while true {
                let n = file.read(into: buffer, at: offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return .failure(.io(String(cString: strerror(errno))))
                }
                if n == 0 { break }
                hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                offset += Int64(n)
            }
            return .success((hasher.finalize(), offset))
        }
    }

    private func stat(relative: String) -> stat? {
        var s = Glibc.stat()
        return lstat(root.path + "/" + relative, &s) == 0 ? s : nil
    }

    private func file(_ relative: String, _ s: stat, digest: Digest?) -> StoredFile {
        let m = Double(s.st_mtim.tv_sec) + Double(s.st_mtim.tv_nsec) / 1e9
        let c = Double(s.st_ctim.tv_sec) + Double(s.st_ctim.tv_nsec) / 1e9
        return StoredFile(digest: digest, relativePath: relative, size: Int64(s.st_size),
                          changedAt: Date(timeIntervalSince1970: max(m, c)), modifiedAt: Date(timeIntervalSince1970: m))
    }

    /// Entry names of a directory except `.` and `..`; empty when it cannot be read.
    static func names(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        // readdir's entries are d_reclen bytes, often shorter than `dirent`: read the name in place through a
        // pointer (copying `pointee` would read past the end of the kernel's buffer).
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
        while let entry = readdir(dir) {
            let name = String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }
}
