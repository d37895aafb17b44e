import Foundation
import OCI
@testable import OCIBundle
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The tar writer and reader: round trips, names too long for ustar, interoperability with GNU tar, and damage.
@Suite("Tar archives")
struct TarTests {
    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tar-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Writes members with `TarWriter` into `path`: (name, bytes); files bigger than 4 KiB go through a descriptor.
    static func write(_ members: [(String, [UInt8])], to path: String, directories: [String] = []) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0)
        defer { close(fd) }
        let tar = TarWriter(fd: fd)
        for d in directories { try tar.addDirectory(d) }
        for (name, bytes) in members {
            if bytes.count > 4096 {
                let src = path + ".src"
                try Data(bytes).write(to: URL(fileURLWithPath: src))
                let sfd = open(src, O_RDONLY)
                defer { close(sfd); unlink(src) }
                try tar.addFile(name, size: Int64(bytes.count), from: sfd)
            } else {
                try tar.addFile(name, bytes: bytes)
            }
        }
        try tar.finish()
        #expect(tar.bytesWritten % 512 == 0)
    }

    /// Reads every file member with `TarReader`.
    static func read(_ path: String) throws -> [(String, [UInt8])] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let tar = TarReader(fd: fd)
        var out: [(String, [UInt8])] = []
        while let e = try tar.next() {
            if e.kind == .file { out.append((e.path, try tar.readAll(limit: 1 << 26))) }
        }
        return out
    }

    static let longName = "blobs/sha512/" + String(repeating: "ab", count: 64)
    static let deepName = String(repeating: "directory-name/", count: 12) + "file-with-a-fairly-long-name.json"

    @Test func roundTripKeepsNamesAndBytes() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let big = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let members: [(String, [UInt8])] = [("oci-layout", Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)), ("empty", []),
                                            ("exactly-512", [UInt8](repeating: 7, count: 512)), (Self.longName, Array("sha512 blob".utf8)),
                                            (Self.deepName, Array("deep".utf8)), ("blobs/sha256/big", big)]
        let path = dir.appendingPathComponent("a.tar").path
        try Self.write(members, to: path, directories: ["blobs", "blobs/sha256"])
        let back = try Self.read(path)
        #expect(back.map(\.0) == members.map(\.0))
        #expect(back.map(\.1) == members.map(\.1))
    }

    @Test func gnuTarReadsWhatCoveWrites() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("a.tar").path
        try Self.write([("index.json", Array("{}".utf8)), (Self.longName, Array("x".utf8)), (Self.deepName, Array("deep".utf8))], to: path,
                       directories: ["blobs"])
        let out = dir.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
        p.arguments = ["-xf", path, "-C", out.path]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(FileManager.default.contents(atPath: out.appendingPathComponent(Self.longName).path) == Data("x".utf8))
        #expect(FileManager.default.contents(atPath: out.appendingPathComponent(Self.deepName).path) == Data("deep".utf8))
        #expect(FileManager.default.contents(atPath: out.appendingPathComponent("index.json").path) == Data("{}".utf8))
    }

    @Test(arguments: ["posix", "gnu"])
    func coveReadsWhatGNUTarWrites(format: String) throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = dir.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: src.appendingPathComponent(Self.longName).deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("long".utf8).write(to: src.appendingPathComponent(Self.longName))
        try Data("layout".utf8).write(to: src.appendingPathComponent("oci-layout"))
        let path = dir.appendingPathComponent("gnu.tar").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
        p.arguments = ["--format=\(format)", "-cf", path, "-C", src.path, "oci-layout", "blobs"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let files = Dictionary(uniqueKeysWithValues: try Self.read(path))
        #expect(files["oci-layout"] == Array("layout".utf8))
        #expect(files[Self.longName] == Array("long".utf8))
    }

    @Test func truncatedArchivesAreRejectedWhereverCut() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("a.tar").path
        try Self.write([("first", [UInt8](repeating: 1, count: 1000)), ("second", [UInt8](repeating: 2, count: 700))], to: path)
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        // Inside the first member's data, at a member boundary (before the second header), inside the second
        // member, and just before the end-of-archive blocks.
        for cut in [700, 1536, 2000, 2300, 2560] {
            let cutPath = dir.appendingPathComponent("cut-\(cut).tar").path
            try whole.prefix(cut).write(to: URL(fileURLWithPath: cutPath))
            #expect(throws: TarError.self) { _ = try Self.read(cutPath) }
        }
        do {
            let cutPath = dir.appendingPathComponent("cut.tar").path
            try whole.prefix(2300).write(to: URL(fileURLWithPath: cutPath))
            _ = try Self.read(cutPath)
            Issue.record("a cut archive was read")
        } catch let e as TarError {
            #expect("\(e)".contains("second"), "names the member: \(e)")
        }
    }

    @Test func damagedHeaderIsRejected() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("a.tar").path
        try Self.write([("first", Array("hello".utf8))], to: path)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[3] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: TarError.self) { _ = try Self.read(path) }
    }

    @Test func paxRecordLengthCountsItself() {
        for value in ["", "x", String(repeating: "y", count: 90), String(repeating: "z", count: 994)] {
            let r = TarWriter.paxRecord("path", value)
            #expect(Int(r.split(separator: " ")[0]) == r.utf8.count)
        }
    }

    @Test func layoutPathsNameDigests() throws {
        let d = try Digest("sha256:" + String(repeating: "a", count: 64))
        #expect(ImageLayout.blobPath(d) == "blobs/sha256/" + String(repeating: "a", count: 64))
        #expect(ImageLayout.digest(atPath: "./" + ImageLayout.blobPath(d)) == d)
        #expect(ImageLayout.digest(atPath: "blobs/sha256/xyz") == nil)
        #expect(ImageLayout.digest(atPath: "index.json") == nil)
    }
}
