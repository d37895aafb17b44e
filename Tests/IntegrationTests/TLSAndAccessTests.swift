// TLS on the listener (with SIGHUP reload) and client access control, with the real cove binary, the real
// docker-registry upstream and real skopeo / curl / openssl clients, all on 127.0.0.1.
import Foundation
import Testing

/// A test CA and server certificates for 127.0.0.1, made with the openssl CLI.
struct TestPKI {
    let dir: URL

    init(in parent: URL) throws {
        dir = parent.appendingPathComponent("pki")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    func openssl(_ args: [String]) async throws {
        let r = try await runCommand("openssl", args, timeout: 60)
        guard r.succeeded else { throw IntegrationError("openssl failed:\n\(r.summary)") }
    }

    /// A self-signed CA `<name>.crt` / `<name>.key`.
    func makeCA(_ name: String) async throws {
        try await openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", path("\(name).key"), "-out", path("\(name).crt"), "-days", "2", "-subj", "/CN=\(name)"])
    }

    /// A server certificate for IP 127.0.0.1 signed by `ca`, written to `certificate` / `key`.
    func issue(ca: String, commonName: String, serial: Int, certificate: String, key: String) async throws {
        let ext = path("\(commonName).ext"), csr = path("\(commonName).csr")
        try "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n".write(toFile: ext, atomically: true, encoding: .utf8)
        try await openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", key, "-out", csr, "-subj", "/CN=\(commonName)"])
        try await openssl(["x509", "-req", "-in", csr, "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"),
                           "-set_serial", String(serial), "-days", "2", "-out", certificate, "-extfile", ext])
    }

    /// A directory holding only `ca.crt` (skopeo's `--src-cert-dir` layout, as in docker's `certs.d/<host>/`).
    func certDir(for ca: String) throws -> String {
        let d = dir.appendingPathComponent("certs-\(ca)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: d.appendingPathComponent("ca.crt"))
        try FileManager.default.copyItem(atPath: path("\(ca).crt"), toPath: d.appendingPathComponent("ca.crt").path)
        return d.path
    }
}

extension ProcessHandle {
    /// The pid of the command `timeout` runs. Signals other than SIGTERM must go to it directly: `timeout`
    /// forwards a SIGHUP but then SIGKILLs the child after its `-k` grace.
    var childPID: Int32? {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").first.flatMap { Int32($0) }
    }
}

/// Starts `cove serve` with `yaml` (listen and storage are added) and waits for `/healthz` (over TLS with `caFile`).
func startCove(_ fixture: Fixture, name: String, yaml: String, caFile: String? = nil) async throws -> (ProcessHandle, Int) {
    let base = fixture.dir.appendingPathComponent(name)
    try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
    let port = try freePort()
    let config = base.appendingPathComponent("cove.yml").path
    try "listen: \"127.0.0.1:\(port)\"\nstorage: \"\(base.path)/cove-data\"\nlog_level: debug\n\(yaml)\n".write(toFile: config, atomically: true, encoding: .utf8)
    let handle = try ProcessHandle(name: name, executable: try coveBinary(), arguments: ["serve", "--config", config],
                                   logDirectory: fixture.logDirectory, maxLifetime: 300)
    let scheme = caFile == nil ? "http" : "https"
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
        guard handle.isRunning else { throw IntegrationError("\(name) exited at start\n\(handle.logTail())") }
        var args = ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "--noproxy", "*"]
        if let caFile { args += ["--cacert", caFile] }
        let r = try await runCommand("curl", args + ["\(scheme)://127.0.0.1:\(port)/healthz"], timeout: 5)
        if r.stdoutText == "200" { return (handle, port) }
        try await Task.sleep(for: .milliseconds(100))
    }
    handle.stop()
    throw IntegrationError("\(name) did not answer /healthz within 60 s\n\(handle.logTail())")
}

/// Starts `cove serve` with TLS from `pki`'s `server.crt` / `server.key` (clients trust `<ca>.crt`) in front of the
/// fixture's registry, plus `extraYAML` (top-level keys).
func startTLSCove(_ fixture: Fixture, name: String, pki: TestPKI, ca: String, extraYAML: String = "") async throws -> (ProcessHandle, Int) {
    try await startCove(fixture, name: name, yaml: """
        upstream:
          url: "\(fixture.registryURL)"
        tls:
          certificate: "\(pki.path("server.crt"))"
          key: "\(pki.path("server.key"))"
        \(extraYAML)
        """, caFile: pki.path("\(ca).crt"))
}

/// The subject and serial of the certificate a new TLS connection to `port` is presented (openssl s_client).
func presentedCertificate(port: Int) async throws -> String {
    let r = try await runCommand("sh", ["-c", "openssl s_client -connect 127.0.0.1:\(port) </dev/null 2>/dev/null | openssl x509 -noout -subject -serial"],
                                 timeout: 20)
    return r.stdoutText
}

/// `curl --cacert ca` over https: the exit status (60 = certificate not trusted) and the HTTP status.
func curlTLS(_ url: String, ca: String, headers: [String] = []) async throws -> (exit: Int32, status: String, body: String) {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("cove-tls-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: out) }
    var args = ["-s", "--max-time", "10", "--noproxy", "*", "--cacert", ca, "-o", out, "-w", "%{http_code}"]
    for h in headers { args += ["-H", h] }
    let r = try await runCommand("curl", args + [url], timeout: 15)
    return (r.status, r.stdoutText, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
}

@Suite("TLS and access control (integration)", .serialized)
struct TLSAndAccessTests {
    @Test func pullsOverTLSAndReloadsTheCertificateOnSIGHUP() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.push("single")
        let image = fixture.image("single")
        let pki = try TestPKI(in: fixture.dir)
        try await pki.makeCA("ca-one")
        try await pki.makeCA("ca-two")
        let cert = pki.path("server.crt"), key = pki.path("server.key")
        try await pki.issue(ca: "ca-one", commonName: "cove-one", serial: 1001, certificate: cert, key: key)
        let (cove, port) = try await startTLSCove(fixture, name: "cove-tls", pki: pki, ca: "ca-one")
        defer { cove.stop() }
        let host = "127.0.0.1:\(port)"

        // A real client over https, trusting the CA through --src-cert-dir (ca.crt), as dockerd's certs.d does.
        let certsOne = try pki.certDir(for: "ca-one")
        let inspect = try await skopeo(["inspect", "--raw", "--cert-dir", certsOne, "docker://\(host)/single:v1"], authFile: fixture.authFile)
        #expect(inspect.succeeded, "\(inspect.summary)\n\(cove.logTail())")
        #expect(sha256Digest(inspect.stdout) == image.digest)
        let out = fixture.dir.appendingPathComponent("pulled-tls").path
        let copy = try await skopeo(["copy", "--src-cert-dir", certsOne, "docker://\(host)/single:v1", "oci:\(out):v1"], authFile: fixture.authFile)
        #expect(copy.succeeded, "\(copy.summary)\n\(cove.logTail())")
        for blob in image.blobs {
            let file = URL(fileURLWithPath: out).appendingPathComponent("blobs/sha256/" + blob.digest.dropFirst("sha256:".count))
            #expect(try await sha256DigestOfFile(file) == blob.digest)
        }
        // HTTP/1.1 behaviour is unchanged over TLS: a range of a cached blob.
        let layer = try #require(image.blobs.max { $0.size < $1.size })
        let range = try await runCommand("curl", ["-s", "--cacert", pki.path("ca-one.crt"), "-H", "Range: bytes=5-14", "-o", "/dev/null",
                                                  "-w", "%{http_code} %{size_download} %{http_version}", "https://\(host)/v2/single/blobs/\(layer.digest)"], timeout: 20)
        #expect(range.stdoutText == "206 10 1.1", "\(range.summary)")
        #expect(try await presentedCertificate(port: port).contains("cove-one"))

        // A connection opened before the reload: one request now, one after the reload on the same connection.
        let go = fixture.dir.appendingPathComponent("reloaded").path
        let keepAlive = Task {
            try await runCommand("python3", ["-c", Self.keepAliveClient, "127.0.0.1", String(port), pki.path("ca-one.crt"), go], timeout: 60)
        }
        // Wait (bounded) until that client has its first answer: python and the handshake are slow under load.
        for _ in 0..<300 where !FileManager.default.fileExists(atPath: go + ".connected") { try await Task.sleep(for: .milliseconds(100)) }

        // A new certificate from another CA (other subject, other serial), then SIGHUP.
        try await pki.issue(ca: "ca-two", commonName: "cove-two", serial: 2002, certificate: cert, key: key)
        let pid = try #require(cove.childPID)
        #expect(kill(pid, SIGHUP) == 0)
        var switched = false
        for _ in 0..<100 where !switched {
            switched = try await curlTLS("https://\(host)/healthz", ca: pki.path("ca-two.crt")).status == "200"
            if !switched { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(switched, "new connections never got the new certificate\n\(cove.logTail())")
        let presented = try await presentedCertificate(port: port)
        #expect(presented.contains("cove-two") && presented.uppercased().contains("07D2"), "\(presented)")  // 2002 = 0x7D2
        #expect(try await curlTLS("https://\(host)/healthz", ca: pki.path("ca-one.crt")).exit == 60, "the old CA no longer verifies")
        FileManager.default.createFile(atPath: go, contents: nil)
        let kept = try await keepAlive.value
        #expect(kept.stdoutText == "200 cove-one\n200 cove-one\n", "the open connection must be unaffected: \(kept.summary)")
        #expect(cove.isRunning, "SIGHUP must not end the process")
        let again = try await skopeo(["inspect", "--raw", "--cert-dir", try pki.certDir(for: "ca-two"), "docker://\(host)/single:v1"], authFile: fixture.authFile)
        #expect(again.succeeded && sha256Digest(again.stdout) == image.digest, "\(again.summary)")

        // An invalid file on SIGHUP: the error names it, and the previous certificate stays in use.
        try "not a certificate\n".write(toFile: cert, atomically: true, encoding: .utf8)
        #expect(kill(pid, SIGHUP) == 0)
        var logged = false
        for _ in 0..<100 where !logged {
            logged = cove.stderr.contains("TLS reload failed") && cove.stderr.contains(cert)
            if !logged { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(logged, "\(cove.logTail())")
        #expect(cove.isRunning)
        #expect(try await curlTLS("https://\(host)/healthz", ca: pki.path("ca-two.crt")).status == "200")
        #expect(try await presentedCertificate(port: port).contains("cove-two"))
    }

    /// Python client: one TLS connection (trusting argv[3]), `GET /healthz`, wait for the file argv[4], then
    /// `GET /healthz` again on the same connection; prints "<status> <peer CN>" per request.
    static let keepAliveClient = """
        import http.client, os, ssl, sys, time
        host, port, ca, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
        conn = http.client.HTTPSConnection(host, port, context=ssl.create_default_context(cafile=ca), timeout=20)
        def once():
            conn.request("GET", "/healthz")
            r = conn.getresponse(); r.read()
            cn = dict(x[0] for x in conn.sock.getpeercert()["subject"])["commonName"]
            print(r.status, cn, flush=True)
        once()
        open(go + ".connected", "w").close()
        sock = conn.sock
        deadline = time.time() + 30
        while not os.path.exists(go) and time.time() < deadline: time.sleep(0.05)
        once()
        assert conn.sock is sock, "reconnected"
        """

    /// A TLS client that stopped reading mid-blob is cut at `shutdown_timeout`, and Cove is gone by then: the wait
    /// for that client's TLS `close_notify` (NIOSSL's 5 s by default) used to come on top, past systemd's
    /// `TimeoutStopSec` with the default 25 s.
    @Test func aStalledTLSClientDoesNotHoldShutdownPastTheTimeout() async throws {
        let size = 16 << 20
        let fixture = try await Fixture(mode: .plain, blobSize: size)
        defer { fixture.shutdown() }
        try await fixture.push("big")
        let layer = try #require(fixture.image("big").blobs.first { $0.size == size })
        let pki = try TestPKI(in: fixture.dir)
        try await pki.makeCA("ca")
        try await pki.issue(ca: "ca", commonName: "cove", serial: 1, certificate: pki.path("server.crt"), key: pki.path("server.key"))
        let (cove, port) = try await startTLSCove(fixture, name: "cove-tls-stop", pki: pki, ca: "ca", extraYAML: "shutdown_timeout: 2s")
        defer { cove.stop() }
        let url = "https://127.0.0.1:\(port)/v2/big/blobs/\(layer.digest)"
        #expect(try await curlTLS(url, ca: pki.path("ca.crt")).status == "200")  // cached now

        let ready = fixture.dir.appendingPathComponent("stalled").path
        let stalled = try ProcessHandle(name: "stalled-client", executable: "python3",
                                        arguments: ["-c", Self.stalledClient, "127.0.0.1", String(port), pki.path("ca.crt"),
                                                    "/v2/big/blobs/\(layer.digest)", ready],
                                        logDirectory: fixture.logDirectory, maxLifetime: 90)
        defer { stalled.stop() }
        for _ in 0..<300 where !FileManager.default.fileExists(atPath: ready) { try await Task.sleep(for: .milliseconds(100)) }
        #expect(FileManager.default.fileExists(atPath: ready), "the client never got the response's first byte\n\(stalled.logTail())")
        try await Task.sleep(for: .milliseconds(500))  // Cove's buffers towards the client fill up

        // Straight to cove: `timeout` would SIGKILL it 5 s after forwarding a SIGTERM.
        let pid = try #require(cove.childPID)
        let start = Date()
        #expect(kill(pid, SIGTERM) == 0)
        for _ in 0..<400 where cove.isRunning { try await Task.sleep(for: .milliseconds(50)) }
        let seconds = Date().timeIntervalSince(start)
        #expect(cove.exitStatus == 0, "\(cove.logTail())")
        // 2 s, plus room for a loaded machine; the 5 s close wait on top made it 7 s.
        #expect(seconds < 5.5, "Cove took \(seconds) s to exit with shutdown_timeout 2s")
        #expect(cove.stderr.contains("cove stopped"), "\(cove.logTail())")
    }

    /// Python client: one TLS connection with a tiny receive buffer (trusting argv[3]), `GET argv[4]`, one byte of
    /// the answer, then the file argv[5], and it never reads again.
    static let stalledClient = """
        import socket, ssl, sys, time
        host, port, ca, path, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((host, port))
        conn = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname=host)
        conn.sendall(f"GET {path} HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n".encode())
        conn.recv(1)
        open(ready, "w").close()
        time.sleep(60)
        """

    @Test func badTLSFilesFailAtStartNamingTheKey() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        let pki = try TestPKI(in: fixture.dir)
        try await pki.makeCA("ca")
        let cert = pki.path("server.crt"), key = pki.path("server.key")
        try await pki.issue(ca: "ca", commonName: "cove", serial: 1, certificate: cert, key: key)
        try await pki.issue(ca: "ca", commonName: "other", serial: 2, certificate: pki.path("other.crt"), key: pki.path("other.key"))
        try "garbage\n".write(toFile: pki.path("garbage.pem"), atomically: true, encoding: .utf8)
        let cases: [(String, String, String)] = [
            ("/nonexistent/cert.pem", key, "tls.certificate"),
            (cert, "/nonexistent/key.pem", "tls.key"),
            (pki.path("garbage.pem"), key, "tls.certificate"),
            (cert, pki.path("garbage.pem"), "tls.key"),
            (cert, pki.path("other.key"), "tls.key"),  // a key that does not match the certificate
        ]
        for (i, (c, k, name)) in cases.enumerated() {
            let config = fixture.dir.appendingPathComponent("bad-tls-\(i).yml").path
            try "listen: \"127.0.0.1:\(try freePort())\"\nstorage: \"\(fixture.dir.path)/bad-\(i)\"\nupstream:\n  url: \"\(fixture.registryURL)\"\ntls:\n  certificate: \"\(c)\"\n  key: \"\(k)\"\n"
                .write(toFile: config, atomically: true, encoding: .utf8)
            for command in ["check-config", "serve"] {
                let r = try await runCommand(try coveBinary(), [command, "--config", config], timeout: 30)
                #expect(r.status != 0 && !r.timedOut, "\(command) case \(i): \(r.summary)")
                #expect(r.stderrText.contains(name), "\(command) case \(i) does not name \(name): \(r.stderrText)")
                #expect(!r.stderrText.contains("PRIVATE KEY"), "key material in an error message")
            }
        }
    }

    @Test func htpasswdUsersPullAndAnonymousClientsAreChallenged() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.push("single")
        let image = fixture.image("single")
        let htpasswd = fixture.dir.appendingPathComponent("htpasswd").path
        let made = try await runCommand("htpasswd", ["-cbB", htpasswd, "carol", "pull-secret-77"], timeout: 30)
        #expect(made.succeeded, "\(made.summary)")
        let (cove, port) = try await startCove(fixture, name: "cove-auth", yaml: """
            upstream:
              url: "\(fixture.registryURL)"
            auth:
              htpasswd: "\(htpasswd)"
            """)
        defer { cove.stop() }
        let host = "127.0.0.1:\(port)"

        let base = try await httpRequest("GET", "http://\(host)/v2/")
        #expect(base.status == 401 && base.header("WWW-Authenticate")?.hasPrefix("Basic realm=\"cove\"") == true, "\(base.transcript)")
        #expect(String(decoding: base.body, as: UTF8.self).contains("\"UNAUTHORIZED\""))

        let anonymous = try await skopeo(["inspect", "--raw", "--tls-verify=false", "docker://\(host)/single:v1"], authFile: fixture.authFile)
        #expect(!anonymous.succeeded, "an anonymous pull must fail: \(anonymous.summary)")
        let wrong = try await skopeo(["inspect", "--raw", "--tls-verify=false", "--creds", "carol:guess", "docker://\(host)/single:v1"], authFile: fixture.authFile)
        #expect(!wrong.succeeded, "a wrong password must fail: \(wrong.summary)")
        #expect(fixture.registryRequests("GET", pathPrefix: "/v2/single/").isEmpty, "refused pulls send nothing upstream")

        let out = fixture.dir.appendingPathComponent("pulled-auth").path
        let copy = try await skopeo(["copy", "--src-tls-verify=false", "--src-creds", "carol:pull-secret-77",
                                     "docker://\(host)/single:v1", "oci:\(out):v1"], authFile: fixture.authFile)
        #expect(copy.succeeded, "\(copy.summary)\n\(cove.logTail())")
        for blob in image.blobs {
            let file = URL(fileURLWithPath: out).appendingPathComponent("blobs/sha256/" + blob.digest.dropFirst("sha256:".count))
            #expect(try await sha256DigestOfFile(file) == blob.digest)
        }
        let log = cove.stdout + cove.stderr
        for secret in ["pull-secret-77", "guess", Data("carol:pull-secret-77".utf8).base64EncodedString()] {
            #expect(!log.contains(secret), "\(secret) appeared in cove's log")
        }
        #expect(log.contains("client authentication failed"), "the wrong password is logged (without it)")

        // SIGHUP re-reads the htpasswd file: a changed password applies at once (remembered successes are
        // forgotten); a broken file keeps the users the server has.
        func status(_ creds: String) async throws -> String {
            try await runCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", creds, "http://\(host)/v2/single/manifests/v1",
                                          "-H", "Accept: \(image.mediaType)"], timeout: 30).stdoutText
        }
        #expect(try await status("carol:pull-secret-77") == "200")
        #expect(try await runCommand("htpasswd", ["-bB", htpasswd, "carol", "rotated-88"], timeout: 30).succeeded)
        let pid = try #require(cove.childPID)
        #expect(kill(pid, SIGHUP) == 0)
        var rotated = false
        for _ in 0..<100 where !rotated {
            rotated = try await status("carol:rotated-88") == "200"
            if !rotated { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(rotated, "\(cove.logTail())")
        #expect(try await status("carol:pull-secret-77") == "401")
        try "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n".write(toFile: htpasswd, atomically: true, encoding: .utf8)
        #expect(kill(pid, SIGHUP) == 0)
        var logged = false
        for _ in 0..<100 where !logged {
            logged = cove.stderr.contains("htpasswd reload failed")
            if !logged { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(logged && cove.isRunning, "\(cove.logTail())")
        #expect(try await status("carol:rotated-88") == "200", "a broken file on reload keeps the previous users")
    }

    @Test func aDownstreamCoveAuthenticatesToAnUpstreamCove() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.push("single")
        let htpasswd = fixture.dir.appendingPathComponent("htpasswd").path
        #expect(try await runCommand("htpasswd", ["-cbB", htpasswd, Fixture.username, Fixture.password], timeout: 30).succeeded)
        let (upper, port) = try await startCove(fixture, name: "cove-upper", yaml: """
            upstream:
              url: "\(fixture.registryURL)"
            auth:
              htpasswd: "\(htpasswd)"
            """)
        defer { upper.stop() }
        // The lower tier's upstream credentials (username + password_file) answer the upper tier's Basic challenge.
        let lower = try await fixture.startCove(withCredentials: true, upstreamURL: "http://127.0.0.1:\(port)")
        let image = fixture.image("single")
        let out = fixture.dir.appendingPathComponent("pulled-chain").path
        let copy = try await skopeo(["copy", "--src-tls-verify=false", "docker://\(lower.host)/single:v1", "oci:\(out):v1"], authFile: fixture.authFile)
        #expect(copy.succeeded, "\(copy.summary)\n\(lower.logTail())\n\(upper.logTail())")
        for blob in image.blobs {
            let file = URL(fileURLWithPath: out).appendingPathComponent("blobs/sha256/" + blob.digest.dropFirst("sha256:".count))
            #expect(try await sha256DigestOfFile(file) == blob.digest)
        }
        #expect(!(upper.stderr + lower.process.stderr).contains(Fixture.password))
    }

    @Test func anonymousCachedReadsOnlyTheCache() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.push("single")
        try await fixture.push("index")
        let htpasswd = fixture.dir.appendingPathComponent("htpasswd").path
        #expect(try await runCommand("htpasswd", ["-cbB", htpasswd, "carol", "pull-secret-77"], timeout: 30).succeeded)
        let (cove, port) = try await startCove(fixture, name: "cove-cached", yaml: """
            upstream:
              url: "\(fixture.registryURL)"
            auth:
              htpasswd: "\(htpasswd)"
              anonymous: cached
            """)
        defer { cove.stop() }
        let host = "127.0.0.1:\(port)"
        // Filled by a client that sends its credentials (curl -u sends them without waiting for a challenge).
        let image = fixture.image("single")
        for path in ["manifests/v1"] + image.blobs.map({ "blobs/\($0.digest)" }) {
            let r = try await runCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "carol:pull-secret-77",
                                                  "-H", "Accept: \(image.mediaType)", "http://\(host)/v2/single/\(path)"], timeout: 30)
            #expect(r.stdoutText == "200", "\(path): \(r.summary)")
        }
        let upstreamBefore = fixture.registryRequests().count

        let out = fixture.dir.appendingPathComponent("pulled-anon").path
        let cached = try await skopeo(["copy", "--src-tls-verify=false", "docker://\(host)/single:v1", "oci:\(out):v1"], authFile: fixture.authFile)
        #expect(cached.succeeded, "an anonymous pull of a cached image: \(cached.summary)\n\(cove.logTail())")
        let miss = try await skopeo(["inspect", "--raw", "--tls-verify=false", "docker://\(host)/index:v1"], authFile: fixture.authFile)
        #expect(!miss.succeeded, "an anonymous miss must be refused: \(miss.summary)")
        let raw = try await httpRequest("GET", "http://\(host)/v2/index/manifests/v1")
        #expect(raw.status == 401 && raw.header("WWW-Authenticate")?.hasPrefix("Basic") == true, "\(raw.transcript)")
        #expect(fixture.registryRequests().count == upstreamBefore, "anonymous requests reached the upstream")
    }

    @Test func deniedRepositoriesSendNothingUpstream() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        try await fixture.push("single")
        try await fixture.push("single", to: "private/single")
        // The push's own requests; everything after this is Cove's.
        let pushed = fixture.registryRequests(pathPrefix: "/v2/private/").count
        let (cove, port) = try await startCove(fixture, name: "cove-deny", yaml: """
            upstream:
              url: "\(fixture.registryURL)"
              repositories:
                deny: ["private/*"]
            """)
        defer { cove.stop() }
        let host = "127.0.0.1:\(port)"
        let denied = try await skopeo(["inspect", "--raw", "--tls-verify=false", "docker://\(host)/private/single:v1"], authFile: fixture.authFile)
        #expect(!denied.succeeded)
        let image = fixture.image("single")
        for path in ["manifests/v1", "manifests/\(image.digest)", "blobs/\(image.blobs[0].digest)", "tags/list"] {
            let r = try await httpRequest("GET", "http://\(host)/v2/private/single/\(path)")
            #expect(r.status == 403 && String(decoding: r.body, as: UTF8.self).contains("\"DENIED\""), "\(r.transcript)")
        }
        #expect(fixture.registryRequests(pathPrefix: "/v2/private/").count == pushed, "a denied repository reached the upstream")
        let allowed = try await skopeo(["inspect", "--raw", "--tls-verify=false", "docker://\(host)/single:v1"], authFile: fixture.authFile)
        #expect(allowed.succeeded && sha256Digest(allowed.stdout) == image.digest, "\(allowed.summary)")
        // The same blob, now cached through the allowed repository, is still refused through the denied one.
        let blob = try await httpRequest("GET", "http://\(host)/v2/private/single/blobs/\(image.blobs[0].digest)")
        #expect(blob.status == 403)
        #expect(fixture.registryRequests(pathPrefix: "/v2/private/").count == pushed)
    }

    @Test func badHtpasswdFailsAtStartWithTheLineNumber() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        let htpasswd = fixture.dir.appendingPathComponent("htpasswd").path
        #expect(try await runCommand("htpasswd", ["-cbB", htpasswd, "carol", "pull-secret-77"], timeout: 30).succeeded)
        #expect(try await runCommand("htpasswd", ["-bm", htpasswd, "dave", "md5-password"], timeout: 30).succeeded)  // $apr1$ (MD5)
        let config = fixture.dir.appendingPathComponent("bad-htpasswd.yml").path
        try "listen: \"127.0.0.1:\(try freePort())\"\nstorage: \"\(fixture.dir.path)/bad\"\nupstream:\n  url: \"\(fixture.registryURL)\"\nauth:\n  htpasswd: \"\(htpasswd)\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let hash = try String(contentsOfFile: htpasswd, encoding: .utf8).split(separator: "\n")[1].split(separator: ":")[1]
        for command in ["check-config", "serve"] {
            let r = try await runCommand(try coveBinary(), [command, "--config", config], timeout: 30)
            #expect(r.status != 0 && !r.timedOut, "\(r.summary)")
            #expect(r.stderrText.contains("auth.htpasswd") && r.stderrText.contains("line 2") && r.stderrText.contains("bcrypt"), "\(r.stderrText)")
            #expect(!r.stderrText.contains(String(hash)), "the hash appeared in the error")
        }
    }
}
