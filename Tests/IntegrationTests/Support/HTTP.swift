// HTTP helpers for the integration tests. Requests go through the `curl` CLI: it sends exactly what we ask
// (no transparent decompression, no header rewriting, several Accept lines stay several lines) and shows
// exactly what came back, which is what a byte-exact mirror test needs. Loopback only.
import Foundation
import OCI

#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
func freePort() throws -> Int {
    let (fd, port) = try boundPort()
    close(fd)
    return port
}

/// A TCP port on 127.0.0.1 where connections are refused for the rest of the test run: it stays bound (never
/// listening) by a socket this process keeps, so no server started later can be given it (a port closed again
/// could be, and would then answer for the "dead" endpoint).
func refusedPort() throws -> Int {
    try boundPort().port // the descriptor is deliberately never closed
}

private func boundPort() throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw IntegrationError("socket() failed: errno \(errno)") }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { close(fd); throw IntegrationError("bind() failed: errno \(errno)") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard named == 0 else { close(fd); throw IntegrationError("getsockname() failed: errno \(errno)") }
    return (fd, Int(UInt16(bigEndian: addr.sin_port)))
}

struct HTTPResponse: Sendable {
    var method: String
    var url: String
    var requestHeaders: [String]
    var status: Int
    /// Header lines of the final response, in order, names as sent.
    var headers: [(name: String, value: String)]
    var body: Data

    /// The first value of a header, name compared case-insensitively.
    func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    func headerValues(_ name: String) -> [String] {
        headers.filter { $0.name.caseInsensitiveCompare(name) == .orderedSame }.map(\.value)
    }

    var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// The registry error envelope's codes: {"errors":[{"code":..}]} (empty if the body is not one).
    var errorCodes: [String] {
        guard let obj = try? JSONSerialization.jsonObject(with: body) as? [String: Any],
              let errors = obj["errors"] as? [[String: Any]] else { return [] }
        return errors.compactMap { $0["code"] as? String }
    }

    /// A transcript for failure messages: the request line and headers, the status, headers and body start.
    var transcript: String {
        var s = "> \(method) \(url)\n"
        for h in requestHeaders { s += "> \(h)\n" }
        s += "< \(status)\n"
        for h in headers { s += "< \(h.name): \(h.value)\n" }
        let preview: String
        if let text = String(data: body.prefix(600), encoding: .utf8),
           !text.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\n" && $0 != "\r" && $0 != "\t" }) {
            preview = body.count <= 600 ? text : "\(body.count) bytes, starts: " + text.prefix(300)
        } else {
            preview = "\(body.count) bytes (binary), starts: " + body.prefix(32).map { String(format: "%02x", $0) }.joined()
        }
        s += "<\n\(preview)"
        return s
    }
}

/// The media types a pull client accepts for manifests, sent as separate `Accept` lines like skopeo does.
let manifestAcceptTypes = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
]

/// One HTTP request via curl. `method` HEAD uses `curl -I`; redirects are not followed. With `saveBodyTo`
/// the response body stays in that file (for large blobs) and `body` is empty.
func httpRequest(
    _ method: String,
    _ url: String,
    headers: [String] = [],
    body: Data? = nil,
    saveBodyTo: URL? = nil,
    timeout: Double = 30
) async throws -> HTTPResponse {
    let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("cove-http-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: tmp) }
    let headerFile = tmp.appendingPathComponent("headers")
    let bodyFile = saveBodyTo ?? tmp.appendingPathComponent("body")
    // With -I curl writes the headers to -o as well: a HEAD's body goes to /dev/null (it has none).
    var args = ["-s", "-S", "--max-time", String(Int(timeout.rounded(.up))), "--noproxy", "*",
                "-D", headerFile.path, "-o", method == "HEAD" ? "/dev/null" : bodyFile.path, "-w", "%{http_code}"]
    if method == "HEAD" {
        args.append("-I")
    } else {
        args += ["-X", method]
    }
    for h in headers { args += ["-H", h] }
    if let body {
        let upload = tmp.appendingPathComponent("upload")
        try body.write(to: upload)
        args += ["--data-binary", "@\(upload.path)"]
    }
    args.append(url)
    let result = try await runCommand("curl", args, timeout: timeout + 5)
    guard result.succeeded, let status = Int(result.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw IntegrationError("curl \(method) \(url) failed:\n\(result.summary)")
    }
    // -D writes every response's headers (e.g. a 100 Continue first): keep the last block. Split bytes, not
    // Characters: "\r\n" is one Character in Swift.
    let raw = (try? Data(contentsOf: headerFile)) ?? Data()
    var blocks: [[String]] = [[]]
    for lineBytes in raw.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        var bytes = lineBytes
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        if bytes.isEmpty {
            if !(blocks.last?.isEmpty ?? true) { blocks.append([]) }
        } else {
            blocks[blocks.count - 1].append(String(decoding: bytes, as: UTF8.self))
        }
    }
    let last = blocks.last(where: { !$0.isEmpty }) ?? []
    var parsed: [(name: String, value: String)] = []
    for line in last.dropFirst() {  // first line is the status line
        guard let colon = line.firstIndex(of: ":") else { continue }
        parsed.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
    }
    return HTTPResponse(
        method: method, url: url, requestHeaders: headers, status: status, headers: parsed,
        body: saveBodyTo == nil ? ((try? Data(contentsOf: bodyFile)) ?? Data()) : Data()
    )
}

/// Polls `url` until it answers. With `expectStatus` nil any HTTP answer counts (a registry with auth answers
/// 401 when ready); otherwise only that status. Throws after `timeout` seconds, or at once if `process` died.
@discardableResult
func waitForHTTP(
    _ url: String,
    timeout: Double = 30,
    expectStatus: Int? = nil,
    process: ProcessHandle? = nil
) async throws -> Int {
    let deadline = Date().addingTimeInterval(timeout)
    var last = "no answer"
    while Date() < deadline {
        if let process, !process.isRunning {
            throw IntegrationError("\(process.name) exited while waiting for \(url)\n\(process.logTail())")
        }
        let r = try await runCommand(
            "curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "--noproxy", "*", url],
            timeout: 5)
        let code = Int(r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        if code != 0 {
            if expectStatus == nil || expectStatus == code { return code }
            last = "status \(code)"
        }
        try await Task.sleep(nanoseconds: 100_000_000)
    }
    throw IntegrationError("\(url) did not answer\(expectStatus.map { " \($0)" } ?? "") within \(timeout)s (last: \(last))"
        + (process.map { "\n" + $0.logTail() } ?? ""))
}

// MARK: - SHA-256, from the OCI module (swift-crypto).

func sha256Hex(_ data: Data) -> String { Digest.sha256(of: data).hex }

/// "sha256:<hex>" of a file, via coreutils `sha256sum` (fast for large blobs even in debug builds).
func sha256DigestOfFile(_ url: URL) async throws -> String {
    let r = try await runCommand("sha256sum", [url.path], timeout: 120)
    guard r.succeeded, let hex = r.stdoutText.split(separator: " ").first else {
        throw IntegrationError("sha256sum failed:\n\(r.summary)")
    }
    return "sha256:" + hex
}

/// "sha256:<hex>" of `data`.
func sha256Digest(_ data: Data) -> String { "sha256:" + sha256Hex(data) }
