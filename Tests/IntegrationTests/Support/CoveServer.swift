// A `cove serve` that can be started, SIGKILLed and restarted on the same storage and config (the crash and
// admin-command tests), plus `cove <command>` runs against that config.
import Foundation
import Testing

/// One config file and storage directory; `start()` launches a `cove serve` on it (one at a time).
final class CoveServer: @unchecked Sendable {
    let fixture: Fixture
    let base: URL
    let configPath: String
    let storage: String
    let port: Int
    private(set) var process: ProcessHandle?
    private var starts = 0

    var url: String { "http://127.0.0.1:\(port)" }

    /// - Parameter extraYAML: top-level keys appended to the config (e.g. a `cache:` section).
    init(_ fixture: Fixture, name: String, extraYAML: String = "") throws {
        self.fixture = fixture
        base = fixture.dir.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        storage = base.appendingPathComponent("cove-data").path
        port = try freePort()
        configPath = base.appendingPathComponent("cove.yml").path
        try """
        listen: "127.0.0.1:\(port)"
        storage: "\(storage)"
        upstream:
          url: "\(fixture.registryURL)"
        log_level: info
        \(extraYAML)

        """.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts `cove serve` and waits until `/v2/` answers 200.
    @discardableResult
    /// - Parameter offline: pass `--offline` (never contact an upstream).
    /// - Parameter environment: extra environment variables (e.g. `http_proxy`).
    func start(timeout: Double = 60, offline: Bool = false, arguments: [String] = [], environment: [String: String] = [:]) async throws -> ProcessHandle {
        starts += 1
        let handle = try ProcessHandle(name: "\(base.lastPathComponent)-\(starts)", executable: try coveBinary(),
                                       arguments: ["serve", "--config", configPath] + (offline ? ["--offline"] : []) + arguments,
                                       environment: environment, logDirectory: fixture.logDirectory, maxLifetime: 300)
        process = handle
        try await waitForHTTP("\(url)/v2/", timeout: timeout, expectStatus: 200, process: handle)
        return handle
    }

    /// Runs `cove <arguments> --config <config>`.
    func command(_ arguments: [String], timeout: Double = 120) async throws -> CommandResult {
        try await runCommand(try coveBinary(), arguments + ["--config", configPath], timeout: timeout)
    }

    /// `cove verify --json [--repair]`: the exit status and the decoded report.
    func verify(repair: Bool = false) async throws -> (CommandResult, VerifyJSON) {
        let r = try await command(["verify", "--json"] + (repair ? ["--repair"] : []))
        guard let report = try? JSONDecoder().decode(VerifyJSON.self, from: r.stdout) else {
            throw IntegrationError("cove verify printed no report:\n\(r.summary)")
        }
        return (r, report)
    }

    /// Files in `tmp/`.
    func tmpFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: storage + "/tmp")) ?? []
    }

    /// Paths (relative to `blobs/`) of every regular file under `blobs/`.
    func blobFiles() -> [String] {
        let root = URL(fileURLWithPath: storage + "/blobs")
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var out: [String] = []
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            out.append(String(url.path.dropFirst(root.path.count + 1)))
        }
        return out.sorted()
    }

    /// The `blob` table's digests, read with Python's sqlite3 (independently of Cove's code).
    func indexedDigests() async throws -> [String] {
        let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join(sorted(r[0] for r in c.execute('SELECT digest FROM blob'))))"
        let r = try await runCommand("python3", ["-c", script, storage + "/index.sqlite"], timeout: 30)
        guard r.succeeded else { throw IntegrationError("reading the index failed:\n\(r.summary)") }
        return r.stdoutText.split(separator: "\n").map(String.init)
    }
}

/// The parts of `cove verify --json` the tests look at.
struct VerifyJSON: Decodable {
    struct Finding: Decodable {
        var kind: String
        var digest: String?
        var path: String
        var repaired: Bool
    }

    var checkedRows: Int
    var findings: [Finding]
    var fillsInFlight: Int
    var skippedRecent: Int

    func kinds() -> [String] { findings.map(\.kind).sorted() }
}

/// Puts `bytes` into the fixture registry as a blob of `repository` (monolithic upload) and returns its digest.
func uploadBlob(_ fixture: Fixture, repository: String, _ bytes: Data) async throws -> String {
    let digest = sha256Digest(bytes)
    let start = try await httpRequest("POST", "\(fixture.registryURL)/v2/\(repository)/blobs/uploads/")
    guard start.status == 202, var location = start.header("Location") else {
        throw IntegrationError("upload start failed: \(start.transcript)")
    }
    if location.hasPrefix("/") { location = fixture.registryURL + location }
    location += (location.contains("?") ? "&" : "?") + "digest=\(digest)"
    let put = try await httpRequest("PUT", location, headers: ["Content-Type: application/octet-stream"], body: bytes)
    guard put.status == 201 else { throw IntegrationError("upload of \(digest) failed: \(put.transcript)") }
    return digest
}

/// `count` bytes from /dev/urandom.
func randomData(_ count: Int) throws -> Data {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
    defer { try? handle.close() }
    return try handle.read(upToCount: count) ?? Data()
}
