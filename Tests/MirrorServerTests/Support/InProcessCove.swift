import Foundation
import Logging
import Mirror
import MirrorServer
import Upstream

/// Cove's real stack (Mirror + RegistryResponder on Hummingbird) in the test process, on a temp storage dir.
final class InProcessCove: Sendable {
    let mirror: Mirror
    let server: RunningServer
    let storage: URL

    var url: String { "http://127.0.0.1:\(server.port)" }

    /// A Cove with one registry whose single endpoint is `upstream`.
    convenience init(upstream: String, credentials: Credentials? = nil, configuration: MirrorConfiguration = MirrorConfiguration()) async throws {
        try await self.init(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [Self.endpoint(upstream, credentials: credentials)])],
                            configuration: configuration)
    }

    /// A Cove with several registries; the first is the default.
    init(registries: [RegistryConfiguration], allowAnyRegistry: Bool = false, configuration: MirrorConfiguration = MirrorConfiguration()) async throws {
        storage = FileManager.default.temporaryDirectory.appendingPathComponent("cove-test-\(UUID().uuidString)")
        var logger = Logger(label: "cove-test")
        logger.logLevel = ProcessInfo.processInfo.environment["COVE_TEST_LOG"] == nil ? .critical : .debug
        let router = UpstreamRouter(registries: registries, defaultName: registries[0].name, allowAnyRegistry: allowAnyRegistry, logger: logger)
        mirror = try Mirror(storage: storage, router: router, configuration: configuration, logger: logger)
        server = try await RunningServer(RegistryResponder(mirror: mirror, logger: logger), label: "cove")
    }

    /// An endpoint with short test timeouts.
    static func endpoint(_ url: String, credentials: Credentials? = nil, resolveTags: Bool = true) -> UpstreamConfiguration {
        UpstreamConfiguration(url: url, credentials: credentials,
                              requestLimits: TransferLimits(connectTimeout: 2, lowSpeedLimit: 1, lowSpeedTime: 5, totalTimeout: 5),
                              blobLimits: TransferLimits(connectTimeout: 2, lowSpeedLimit: 1, lowSpeedTime: 5), resolveTags: resolveTags)
    }

    func stop() {
        server.stop()
        try? FileManager.default.removeItem(at: storage)
    }

    /// True when the blob is committed on disk and in the index.
    func isCached(_ digest: String) -> Bool {
        let hex = digest.split(separator: ":")[1]
        let path = storage.path + "/blobs/sha256/\(hex.prefix(2))/\(hex)"
        return FileManager.default.fileExists(atPath: path) && ((try? mirror.index.blob(digest)) ?? nil) != nil
    }

    /// Files left in tmp/ (fills in flight or leaked).
    func tmpFiles() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: storage.path + "/tmp")) ?? []
    }
}

/// A finished curl run: exit code (18 = transfer closed with data outstanding), status, headers, body.
struct CurlResult: Sendable {
    var exitCode: Int32
    var status: Int
    var headers: [String: String]
    var body: [UInt8]
}

/// Runs the `curl` CLI (a real HTTP client) and collects what it received. Bounded by `maxTime` seconds.
func curl(_ url: String, method: String = "GET", headers: [String] = [], maxTime: Double = 60) async throws -> CurlResult {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("curl-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let bodyPath = dir.appendingPathComponent("body").path, headPath = dir.appendingPathComponent("head").path
    var args = ["-s", "-o", bodyPath, "-D", headPath, "--max-time", String(maxTime)]
    if method == "HEAD" { args.append("-I") } else if method != "GET" { args += ["-X", method] }
    for h in headers { args += ["-H", h] }
    args.append(url)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    p.arguments = args
    let code: Int32 = try await withCheckedThrowingContinuation { c in
        p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
        do { try p.run() } catch { c.resume(throwing: error) }
    }
    let head = (try? String(contentsOfFile: headPath, encoding: .utf8)) ?? ""
    var status = 0
    var fields: [String: String] = [:]
    for line in head.split(whereSeparator: \.isNewline) {
        if line.hasPrefix("HTTP/") { status = Int(line.split(separator: " ")[1]) ?? 0; fields = [:]; continue }
        if let colon = line.firstIndex(of: ":") {
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    let body = method == "HEAD" ? [] : ((try? Data(contentsOf: URL(fileURLWithPath: bodyPath))).map { [UInt8]($0) } ?? [])
    return CurlResult(exitCode: code, status: status, headers: fields, body: body)
}

/// Polls `condition` every 50 ms for at most `seconds`.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return condition()
}
