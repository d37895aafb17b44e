// HTTP helpers for the integration tests. Requests go through the `curl` CLI: it sends exactly what we ask
// (no transparent decompression, no header rewriting, several Accept lines stay several lines) and shows
// exactly what came back, which is what a byte-exact mirror test needs. Loopback only.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw IntegrationError("socket() failed: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw IntegrationError("bind() failed: errno \(errno)") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard named == 0 else { throw IntegrationError("getsockname() failed: errno \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
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

// MARK: - SHA-256 (FIPS 180-4), so the tests need nothing beyond Foundation.

func sha256Hex(_ data: Data) -> String {
    var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]
    var msg = [UInt8](data)
    let bitLength = UInt64(msg.count) &* 8
    msg.append(0x80)
    while msg.count % 64 != 56 { msg.append(0) }
    for i in (0..<8).reversed() { msg.append(UInt8(truncatingIfNeeded: bitLength >> (UInt64(i) * 8))) }
    @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
    var w = [UInt32](repeating: 0, count: 64)
    msg.withUnsafeBufferPointer { buf in
        var chunk = 0
        while chunk < buf.count {
            for i in 0..<16 {
                let j = chunk + i * 4
                w[i] = UInt32(buf[j]) << 24 | UInt32(buf[j + 1]) << 16 | UInt32(buf[j + 2]) << 8 | UInt32(buf[j + 3])
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7]
            for i in 0..<64 {
                let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                let ch = (e & f) ^ (~e & g)
                let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
                let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                let maj = (a & b) ^ (a & c) ^ (b & c)
                let t2 = s0 &+ maj
                hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
            }
            h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
            h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
            chunk += 64
        }
    }
    return h.map { word in
        let s = String(word, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }.joined()
}

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
