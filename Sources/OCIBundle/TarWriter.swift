import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes a POSIX tar archive (IEEE Std 1003.1-2001 "pax interchange format": ustar headers, plus a pax extended
/// header when a name or size does not fit ustar) sequentially to a file descriptor, never seeking: the output
/// may be a pipe (`cove export -o -`). Memory stays bounded: file contents are copied in chunks (`sendfile(2)`
/// where the kernel allows it, else `pread`/`write` through one 1 MiB buffer).
///
/// Layout of one member: a 512-byte header, the contents, zero padding to a multiple of 512. The archive ends with
/// two zero blocks (`finish()`).
public final class TarWriter {
    /// Where the archive goes. Not closed by the writer.
    public let fd: Int32
    /// Bytes written so far (headers, contents, padding).
    public private(set) var bytesWritten: Int64 = 0
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var sendfileWorks = true

    /// - Parameter fd: an open descriptor (a regular file, a pipe, a socket).
    public init(fd: Int32) { self.fd = fd }

    /// Adds a directory entry `path` (a trailing `/` is added), mode 0755.
    /// - Throws: `TarError.io` when the output cannot be written.
    public func addDirectory(_ path: String) throws {
        let name = path.hasSuffix("/") ? path : path + "/"
        try writeHeader(name: name, size: 0, type: UInt8(ascii: "5"), mode: 0o755)
    }

    /// Adds a regular file `path` holding `bytes`, mode 0644.
    /// - Throws: `TarError.io` when the output cannot be written.
    public func addFile(_ path: String, bytes: [UInt8]) throws {
        try writeHeader(name: path, size: Int64(bytes.count), type: UInt8(ascii: "0"), mode: 0o644)
        try bytes.withUnsafeBytes { raw in try writeAll(raw) }
        try pad(Int64(bytes.count))
    }

    /// Adds a regular file `path` whose `size` bytes are read from the open descriptor `source` from offset 0.
    /// - Throws: `TarError.io` when the output cannot be written; `TarError.shortSource` when `source` ends
    ///   before `size` bytes (the archive is then unusable: the caller must discard it).
    public func addFile(_ path: String, size: Int64, from source: Int32) throws {
        try writeHeader(name: path, size: size, type: UInt8(ascii: "0"), mode: 0o644)
        var offset: Int64 = 0
        while offset < size {
            let want = Int(min(Int64(1 << 30), size - offset))
            if sendfileWorks {
                var off = off_t(offset)
                let n = sendfile(fd, source, &off, want)
                if n > 0 { offset += Int64(n); bytesWritten += Int64(n); continue }
                if n == 0 { throw TarError.shortSource(path) }
                if errno == EINTR || errno == EAGAIN { continue }
                if errno == EINVAL || errno == ENOSYS { sendfileWorks = false; continue }
                throw TarError.io("write: \(String(cString: strerror(errno)))")
            }
            let chunk = min(buffer.count, want)
            let n = buffer.withUnsafeMutableBytes { pread(source, $0.baseAddress, chunk, off_t(offset)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TarError.io("read \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw TarError.shortSource(path) }
            try buffer.withUnsafeBytes { raw in try writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<n])) }
            offset += Int64(n)
        }
        try pad(size)
    }

    /// Ends the archive with two zero blocks.
    /// - Throws: `TarError.io`.
    public func finish() throws {
        let zeros = [UInt8](repeating: 0, count: 1024)
        try zeros.withUnsafeBytes { raw in try writeAll(raw) }
    }

    // MARK: - Headers

    private func writeHeader(name: String, size: Int64, type: UInt8, mode: Int) throws {
        var pax: [(String, String)] = []
        let split = Self.splitUstarName(name)
        if split == nil { pax.append(("path", name)) }
        if size > Self.maxUstarSize { pax.append(("size", String(size))) }
        if !pax.isEmpty {
            let body = Array(pax.map { Self.paxRecord($0.0, $0.1) }.joined().utf8)
            let header = Self.header(name: "PaxHeaders/entry", prefix: "", size: Int64(body.count), type: UInt8(ascii: "x"), mode: 0o644)
            try header.withUnsafeBytes { raw in try writeAll(raw) }
            try body.withUnsafeBytes { raw in try writeAll(raw) }
            try pad(Int64(body.count))
        }
        // With a pax `path`, the ustar name is only a fallback for readers without pax support.
        let (prefix, last) = split ?? ("", String(decoding: Array(name.utf8.suffix(99)), as: UTF8.self))
        let header = Self.header(name: last, prefix: prefix, size: min(size, Self.maxUstarSize), type: type, mode: mode)
        try header.withUnsafeBytes { raw in try writeAll(raw) }
    }

    /// Largest size an 11-digit octal ustar field holds (8 GiB - 1).
    static let maxUstarSize: Int64 = 0o77777777777

    /// Splits `name` into ustar's `prefix` (≤ 155 bytes) and `name` (≤ 100 bytes) at a `/`, or nil when it
    /// cannot be split so.
    static func splitUstarName(_ name: String) -> (prefix: String, name: String)? {
        let bytes = Array(name.utf8)
        if bytes.count <= 100 { return ("", name) }
        guard bytes.count <= 256 else { return nil }
        // The last `/` such that the rest fits in 100 bytes and the head in 155.
        for i in stride(from: bytes.count - 1, through: 0, by: -1) where bytes[i] == UInt8(ascii: "/") {
            let head = i, tail = bytes.count - i - 1
            if tail > 100 { return nil }
            if head <= 155 && tail > 0 {
                return (String(decoding: bytes[..<i], as: UTF8.self), String(decoding: bytes[(i + 1)...], as: UTF8.self))
            }
        }
        return nil
    }

    /// One pax record: `"<length> <key>=<value>\n"`, where length counts the whole record including itself.
    static func paxRecord(_ key: String, _ value: String) -> String {
        let rest = " \(key)=\(value)\n"
        var length = rest.utf8.count + 1
        while String(length).utf8.count + rest.utf8.count != length { length = String(length).utf8.count + rest.utf8.count }
        return "\(length)\(rest)"
    }

    static func header(name: String, prefix: String, size: Int64, type: UInt8, mode: Int) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ s: String, at offset: Int, width: Int) {
            for (i, b) in s.utf8.prefix(width).enumerated() { h[offset + i] = b }
        }
        func octal(_ v: Int64, at offset: Int, width: Int) {
            let digits = String(v, radix: 8)
            put(String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits, at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(Int64(mode), at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(0, at: 136, width: 12)  // mtime: 0, so the same images give the same bytes
        h[156] = type
        put("ustar", at: 257, width: 6)
        put("00", at: 263, width: 2)
        put(prefix, at: 345, width: 155)
        for i in 148..<156 { h[i] = UInt8(ascii: " ") }
        let sum = h.reduce(0) { $0 + Int64($1) }
        octal(sum, at: 148, width: 7)
        h[155] = UInt8(ascii: " ")
        return h
    }

    private func pad(_ size: Int64) throws {
        let rest = Int((512 - size % 512) % 512)
        guard rest > 0 else { return }
        let zeros = [UInt8](repeating: 0, count: rest)
        try zeros.withUnsafeBytes { raw in try writeAll(raw) }
    }

    private func writeAll(_ raw: UnsafeRawBufferPointer) throws {
        var sent = 0
        while sent < raw.count {
            let n = write(fd, raw.baseAddress! + sent, raw.count - sent)
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw TarError.io("write: \(String(cString: strerror(errno)))")
            }
            sent += n
        }
        bytesWritten += Int64(raw.count)
    }
}

/// Why a tar archive could not be written or read.
public enum TarError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The output or input failed (errno text).
    case io(String)
    /// A file copied into the archive ended before its announced size (the path inside the archive).
    case shortSource(String)
    /// The archive ends inside a member or before its end-of-archive blocks (what was being read).
    case truncated(String)
    /// A header is not a tar header (bad checksum or number field), at this byte offset.
    case badHeader(offset: Int64, String)

    public var description: String {
        switch self {
        case .io(let m): "I/O error: \(m)"
        case .shortSource(let p): "the cached file for \(p) is shorter than its size"
        case .truncated(let what): "the archive is truncated: it ends \(what)"
        case .badHeader(let offset, let why): "not a tar archive (or corrupt) at byte \(offset): \(why)"
        }
    }
}
