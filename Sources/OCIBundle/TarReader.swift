import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One member of a tar archive, as `TarReader.next()` returns it.
public struct TarEntry: Sendable, Equatable {
    /// What a member is; links, devices and FIFOs are reported as `.other` and their data skipped.
    public enum Kind: Sendable, Equatable { case file, directory, other }
    /// The member's path (pax `path`, GNU long name or ustar prefix + name), without a leading `./`.
    public var path: String
    public var kind: Kind
    /// Content size in bytes (0 for directories).
    public var size: Int64
}

/// Reads a tar archive (ustar, pax extended headers, GNU long names and base-256 sizes) sequentially from a file
/// descriptor, never seeking, so the input may be a pipe. Checks every header's checksum and requires the
/// end-of-archive zero block: an archive cut anywhere — inside a member, between members — is `TarError.truncated`.
///
/// Use: `while let entry = try reader.next() { … read(into:) until it returns 0 … }`. Contents not read are
/// skipped by the next `next()`.
public final class TarReader {
    /// The input. Not closed by the reader.
    public let fd: Int32
    /// Bytes consumed so far.
    public private(set) var offset: Int64 = 0
    private var current: TarEntry?
    /// Bytes of the current member's contents not yet read, and the padding after them.
    private var remaining: Int64 = 0
    private var padding: Int64 = 0
    private var skipBuffer = [UInt8](repeating: 0, count: 1 << 16)

    public init(fd: Int32) { self.fd = fd }

    /// The next member, or nil at the end of the archive.
    /// - Throws: `TarError.truncated` when the input ends before the end-of-archive block or inside a member,
    ///   `.badHeader` for a block that is not a tar header, `.io` for read errors.
    public func next() throws -> TarEntry? {
        try skipRest()
        var paxPath: String?
        var paxSize: Int64?
        var longName: String?
        while true {
            var block = [UInt8](repeating: 0, count: 512)
            let got = try readFully(&block)
            guard got == 512 else {
                let after = current.map { "after member \($0.path)" } ?? "before its first member"
                throw TarError.truncated(got > 0 ? "inside the header \(after)" : "\(after), before the end-of-archive block")
            }
            offset += 512
            if block.allSatisfy({ $0 == 0 }) { current = nil; return nil }
            let headerOffset = offset - 512
            guard let stored = Self.number(block[148..<156]) else { throw TarError.badHeader(offset: headerOffset, "checksum field is not a number") }
            var sum: Int64 = 0
            for (i, b) in block.enumerated() { sum += (148..<156).contains(i) ? 32 : Int64(b) }
            guard sum == stored else { throw TarError.badHeader(offset: headerOffset, "header checksum mismatch") }
            guard var size = Self.number(block[124..<136]), size >= 0 else { throw TarError.badHeader(offset: headerOffset, "size field is not a number") }
            let type = block[156]
            var name = Self.string(block[0..<100])
            if block[257..<262].elementsEqual("ustar".utf8) {
                let prefix = Self.string(block[345..<500])
                if !prefix.isEmpty { name = prefix + "/" + name }
            }
            switch type {
            case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"):
                guard size <= 1 << 20 else { throw TarError.badHeader(offset: headerOffset, "extended header of \(size) bytes") }
                var data = [UInt8](repeating: 0, count: Int(size))
                guard try readFully(&data) == data.count else { throw TarError.truncated("inside an extended header") }
                offset += size
                try skip(Self.padding(size), what: "an extended header")
                if type == UInt8(ascii: "L") {
                    longName = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
                } else if type == UInt8(ascii: "x") {
                    for (key, value) in try Self.paxRecords(data, at: headerOffset) {
                        if key == "path" { paxPath = value }
                        if key == "size" { paxSize = Int64(value) }
                    }
                }
                continue
            default:
                break
            }
            if let paxSize { size = paxSize }
            var path = paxPath ?? longName ?? name
            while path.hasPrefix("./") { path.removeFirst(2) }
            let kind: TarEntry.Kind = switch type {
            case UInt8(ascii: "0"), 0, UInt8(ascii: "7"): .file
            case UInt8(ascii: "5"): .directory
            default: .other
            }
            if kind == .directory { size = 0 }
            let entry = TarEntry(path: path, kind: kind, size: size)
            current = entry
            remaining = size
            padding = Self.padding(size)
            return entry
        }
    }

    /// Reads contents of the current member into `buffer`.
    /// - Returns: bytes read; 0 at the end of the member.
    /// - Throws: `TarError.truncated` naming the member when the input ends inside it; `.io`.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard remaining > 0 else { return 0 }
        let want = Int(min(Int64(buffer.count), remaining))
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, want)
            if n < 0 {
                if errno == EINTR { continue }
                throw TarError.io("read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw TarError.truncated("inside member \(current?.path ?? "?") (\(remaining) of its \(current?.size ?? 0) bytes missing)") }
            remaining -= Int64(n)
            offset += Int64(n)
            return n
        }
    }

    /// Reads the whole current member (for small files: `index.json`, manifests).
    /// - Throws: `TarError.badHeader` when it is larger than `limit` bytes; as `read(into:)`.
    public func readAll(limit: Int64) throws -> [UInt8] {
        guard remaining <= limit else { throw TarError.badHeader(offset: offset, "member \(current?.path ?? "?") is \(remaining) bytes, more than \(limit)") }
        var out = [UInt8](repeating: 0, count: Int(remaining))
        var filled = 0
        while filled < out.count {
            let n = try out.withUnsafeMutableBytes { raw in
                try read(into: UnsafeMutableRawBufferPointer(rebasing: raw[filled...]))
            }
            filled += n
        }
        return out
    }

    private func skipRest() throws {
        let what = current.map { "inside member \($0.path)" } ?? "inside a member"
        if remaining > 0 {
            try skip(remaining, what: what)
            remaining = 0
        }
        try skip(padding, what: what)
        padding = 0
    }

    private func skip(_ count: Int64, what: String) throws {
        var left = count
        while left > 0 {
            let want = Int(min(Int64(skipBuffer.count), left))
            let n = skipBuffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, want) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TarError.io("read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw TarError.truncated(what) }
            left -= Int64(n)
            offset += Int64(n)
        }
    }

    /// Reads until `buffer` is full or the input ends. - Returns: bytes read.
    private func readFully(_ buffer: inout [UInt8]) throws -> Int {
        var filled = 0
        while filled < buffer.count {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TarError.io("read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            filled += n
        }
        return filled
    }

    static func padding(_ size: Int64) -> Int64 { (512 - size % 512) % 512 }

    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal number field (NUL/space padded), or a GNU base-256 one (high bit of the first byte set).
    static func number(_ bytes: ArraySlice<UInt8>) -> Int64? {
        if let first = bytes.first, first & 0x80 != 0 {
            var v: Int64 = Int64(first & 0x7F)
            for b in bytes.dropFirst() {
                guard v < Int64.max >> 8 else { return nil }
                v = v << 8 | Int64(b)
            }
            return v
        }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
        if text.isEmpty { return 0 }
        return Int64(text, radix: 8)
    }

    /// Parses pax records `"<length> <key>=<value>\n"`.
    static func paxRecords(_ data: [UInt8], at offset: Int64) throws -> [(String, String)] {
        var out: [(String, String)] = []
        var i = 0
        while i < data.count {
            guard let space = data[i...].firstIndex(of: UInt8(ascii: " ")),
                  let length = Int(String(decoding: data[i..<space], as: UTF8.self)), length > 0, i + length <= data.count,
                  data[i + length - 1] == UInt8(ascii: "\n"),
                  let equals = data[(space + 1)..<(i + length)].firstIndex(of: UInt8(ascii: "=")) else {
                throw TarError.badHeader(offset: offset, "malformed pax record")
            }
            out.append((String(decoding: data[(space + 1)..<equals], as: UTF8.self),
                        String(decoding: data[(equals + 1)..<(i + length - 1)], as: UTF8.self)))
            i += length
        }
        return out
    }
}
