import BlobStore
import CacheIndex
import Foundation
import OCI

/// `cove verify [--repair]`.
public struct VerifyCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        /// Remove what is wrong from index and disk.
        public var repair: Bool
        public init(repair: Bool) { self.repair = repair }
    }

    public typealias Response = VerifyReport
    public static let name = "verify"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> VerifyReport {
        try await cache.verify(repair: request.repair)
    }
}

/// What `verify` found.
public struct VerifyReport: AdminResponse, Equatable {
    /// A kind of problem.
    public enum Kind: String, Codable, Sendable {
        /// The file's bytes do not hash to its digest (manifests: by `ManifestDigest.of`), or its size differs
        /// from the index. Repair: row, then file removed.
        case mismatch
        /// An index row without its file. Repair: row removed.
        case missing
        /// A file under `blobs/` without an index row (or not at a digest's path). Repair: file removed.
        case orphan
        /// A temp file left by a process that died during a fill (only reported when no server runs: a running
        /// server's temp files are its fills in flight). Repair: file removed.
        case temporary
        /// A file that exists but cannot be read (permissions, I/O error). Never removed: the bytes may be fine.
        case unreadable
    }

    /// One problem.
    public struct Finding: Codable, Sendable, Equatable {
        public var kind: Kind
        /// The digest concerned, when known.
        public var digest: String?
        /// The file, relative to the storage root.
        public var path: String
        /// What exactly is wrong.
        public var detail: String
        /// True when `--repair` removed it.
        public var repaired: Bool
    }

    /// Index rows checked.
    public var checkedRows: Int
    /// Bytes hashed.
    public var checkedBytes: Int64
    /// Problems, in order: mismatches and missing files by digest, then orphans and temp files by path.
    public var findings: [Finding]
    /// Temp files of fills the running server has in flight (not problems).
    public var fillsInFlight: Int
    /// Files committed moments ago by the running server whose index row may not be written yet: not judged.
    public var skippedRecent: Int
    /// Whether `--repair` was asked for.
    public var repair: Bool

    /// 1 when anything was found (repaired or not), else 0.
    public var exitStatus: Int32 { findings.isEmpty ? 0 : 1 }

    public func count(_ kind: Kind) -> Int { findings.filter { $0.kind == kind }.count }

    public var text: String {
        var lines = findings.map { f in
            "\(f.kind.rawValue.uppercased())\t\(f.digest ?? "-")\t\(f.path)\t\(f.detail)\(f.repaired ? " (removed)" : "")"
        }
        var summary = "checked \(checkedRows) entries, \(ByteFormat.human(checkedBytes)) hashed: "
        if findings.isEmpty {
            summary += "no problems"
        } else {
            summary += [Kind.mismatch, .missing, .orphan, .temporary, .unreadable].compactMap { k in
                let n = count(k)
                return n == 0 ? nil : "\(n) \(k.rawValue)"
            }.joined(separator: ", ")
            let fixed = findings.filter(\.repaired).count
            summary += repair ? "; \(fixed) repaired" : "; run `cove verify --repair` to remove them"
        }
        if fillsInFlight > 0 { summary += "; \(fillsInFlight) fills in flight" }
        if skippedRecent > 0 { summary += "; \(skippedRecent) files committed just now not judged" }
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

extension CacheAdmin {
    /// Files younger than this (seconds) without a row are not judged while a server runs: a fill renames
    /// its file into `blobs/` before it inserts the row, and a large file's fsync can take seconds.
    static let commitGrace: TimeInterval = 60
    /// Manifests are read whole to apply `ManifestDigest.of`; a "manifest" larger than this is hashed as bytes.
    static let maxManifestBytes: Int64 = 64 << 20

    /// Re-hashes every file the index records, and looks for rows without files, files without rows and
    /// leftover temp files.
    ///
    /// Safe while the server runs: it waits for start-up reconciliation; it re-checks each finding just before
    /// reporting it (eviction deletes a row then its file, a fill renames a file then inserts its row); it
    /// skips files committed in the last `commitGrace` seconds; and repairs delete rows before files, the
    /// eviction engine's order.
    /// - Throws: a database error when the index cannot be read.
    public func verify(repair: Bool) async throws -> VerifyReport {
        if let reconciliation { _ = await reconciliation.wait() }
        let started = Date()
        var report = VerifyReport(checkedRows: 0, checkedBytes: 0, findings: [], fillsInFlight: 0, skippedRecent: 0, repair: repair)
        // Files first, rows second: a file committed between the two reads has its row by the second one.
        let files = store.committedFiles()
        let rows = try index.allBlobs().sorted { $0.digest < $1.digest }
        let manifestTypes = try index.manifestMediaTypes()
        let rowDigests = Set(rows.map(\.digest))

        for row in rows {
            report.checkedRows += 1
            guard let digest = try? Digest(row.digest) else {
                var f = VerifyReport.Finding(kind: .mismatch, digest: row.digest, path: "index.sqlite", detail: "the index holds an invalid digest", repaired: false)
                if repair { f.repaired = (try? index.forgetBlob(row.digest)) != nil }
                report.findings.append(f)
                continue
            }
            let path = relativePath(digest)
            let outcome = check(digest, manifestMediaType: manifestTypes[row.digest], expectedSize: row.size)
            switch outcome {
            case .ok(let bytes):
                report.checkedBytes += bytes
            case .missing:
                // Evicted (or forgotten) meanwhile? Then the row is gone too and nothing is wrong.
                guard hasRow(row.digest), !store.contains(digest) else { continue }
                var f = VerifyReport.Finding(kind: .missing, digest: row.digest, path: path, detail: "indexed (\(row.size) bytes) but the file is missing", repaired: false)
                if repair { f.repaired = (try? index.forgetBlob(row.digest, if: { !store.contains(digest) })) == true }
                report.findings.append(f)
            case .unreadable(let why):
                report.findings.append(.init(kind: .unreadable, digest: row.digest, path: path, detail: why, repaired: false))
            case .bad(let why, let bytes):
                report.checkedBytes += bytes
                guard hasRow(row.digest) else { continue }
                var f = VerifyReport.Finding(kind: .mismatch, digest: row.digest, path: path, detail: why, repaired: false)
                if repair {
                    // Row first, then file: never a row without its file, even if this process dies between.
                    if (try? index.forgetBlob(row.digest)) != nil { f.repaired = store.removeFile(relativePath: path) }
                }
                report.findings.append(f)
            }
            if report.checkedRows % 256 == 0 { await Task.yield() }
        }

        for file in files.sorted(by: { $0.relativePath < $1.relativePath }) {
            if let digest = file.digest, rowDigests.contains(digest.description) { continue }
            if isServer, file.changedAt > started.addingTimeInterval(-Self.commitGrace) {
                report.skippedRecent += 1
                continue
            }
            // Its row may have been inserted after the rows were read.
            if let digest = file.digest, hasRow(digest.description) { continue }
            var f = VerifyReport.Finding(kind: .orphan, digest: file.digest?.description, path: file.relativePath,
                                         detail: file.digest == nil ? "not a committed file's path" : "file (\(file.size) bytes) without an index row",
                                         repaired: false)
            if repair {
                let stillOrphan = file.digest.map { !hasRow($0.description) } ?? true
                if stillOrphan { f.repaired = store.removeFile(relativePath: file.relativePath) }
            }
            report.findings.append(f)
        }

        var temps = store.temporaryFiles().sorted { $0.relativePath < $1.relativePath }
        if isServer {
            // The server cleared tmp/ when it started: a file there is a fill in flight, or an import staging
            // (written to recently); one nothing has written to for an hour is a leftover.
            let active = await mirror?.fillTemporaryFiles() ?? []
            let stale = Date().addingTimeInterval(-3600)
            let (inFlight, leftover) = (temps.filter { active.contains($0.relativePath) || $0.modifiedAt > stale },
                                        temps.filter { !active.contains($0.relativePath) && $0.modifiedAt <= stale })
            report.fillsInFlight = inFlight.count
            temps = leftover
        }
        for t in temps {
            var f = VerifyReport.Finding(kind: .temporary, digest: nil, path: t.relativePath,
                                         detail: "temp file (\(t.size) bytes) of a fill that never finished", repaired: false)
            if repair { f.repaired = store.removeFile(relativePath: t.relativePath) }
            report.findings.append(f)
        }
        if !report.findings.isEmpty {
            logger.warning("verify found problems", metadata: ["findings": "\(report.findings.count)", "repair": "\(repair)"])
        }
        return report
    }

    enum FileCheck {
        case ok(Int64)
        case missing
        case unreadable(String)
        case bad(String, Int64)
    }

    /// Hashes one committed file by its kind's rule and compares its size with the index's.
    func check(_ digest: Digest, manifestMediaType: String?, expectedSize: Int64) -> FileCheck {
        if let mediaType = manifestMediaType, expectedSize <= Self.maxManifestBytes {
            switch store.read(digest) {
            case .failure(.missing): return .missing
            case .failure(.io(let why)): return .unreadable(why)
            case .success(let body):
                let size = Int64(body.count)
                if size != expectedSize { return .bad("size \(size) bytes, the index says \(expectedSize)", size) }
                let actual = ManifestDigest.of(body, mediaType: mediaType, algorithm: digest.algorithm)
                return actual == digest ? .ok(size) : .bad("manifest content hashes to \(actual)", size)
            }
        }
        switch store.hashFile(digest) {
        case .failure(.missing): return .missing
        case .failure(.io(let why)): return .unreadable(why)
        case .success(let (actual, size)):
            if size != expectedSize { return .bad("size \(size) bytes, the index says \(expectedSize)", size) }
            return actual == digest ? .ok(size) : .bad("content hashes to \(actual)", size)
        }
    }

    /// True when the index has a row for `digest` now (a read error counts as "yes": never delete on doubt).
    func hasRow(_ digest: String) -> Bool {
        do { return try index.blob(digest) != nil } catch { return true }
    }

    func relativePath(_ digest: Digest) -> String {
        String(store.path(for: digest).dropFirst(store.root.path.count + 1))
    }
}
