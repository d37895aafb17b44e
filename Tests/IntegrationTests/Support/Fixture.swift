// The integration-test fixture: a temp dir, real images (Fixtures/make_images.py), a real upstream registry
// (Debian's docker-registry, distribution 2.8, via Fixtures/registry.py) in plain, token or htpasswd mode, a
// token issuer for token mode (Fixtures/token_issuer.py), the images pushed with skopeo (the Docker manifest
// list with Fixtures/push_image.py: skopeo 1.9 cannot push Docker media types byte-exact from an OCI layout),
// and any number of Cove processes in front of it. Everything listens on 127.0.0.1 only; `shutdown()` (also
// run by deinit) stops every child process.
//
// Environment: COVE_BIN (the cove executable; default: `cove` next to the test runner),
// COVE_KEEP_FIXTURES=1 (keep the temp dirs and logs for a look after a failure).
import Foundation

// MARK: - Image summary (the JSON make_images.py prints)

struct BlobSummary: Codable, Sendable, Hashable {
    var digest: String
    var mediaType: String
    var size: Int
}

struct PlatformSummary: Codable, Sendable, Hashable {
    var architecture: String
    var os: String
    var variant: String?
}

struct ChildManifestSummary: Codable, Sendable {
    var digest: String
    var mediaType: String
    var size: Int
    var platform: PlatformSummary?
    var config: BlobSummary
    var layers: [BlobSummary]
}

struct ImageSummary: Codable, Sendable {
    /// Path of the OCI image layout holding the image.
    var layout: String
    var tag: String
    /// The top manifest (image manifest, OCI index or Docker manifest list).
    var digest: String
    var mediaType: String
    var size: Int
    /// The image manifests: the index's children, or for a plain image the one manifest (same as `digest`).
    var manifests: [ChildManifestSummary]
    /// Configs and layers, deduplicated.
    var blobs: [BlobSummary]

    var isIndex: Bool {
        mediaType == "application/vnd.oci.image.index.v1+json"
            || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
    }

    var isDockerMediaType: Bool { mediaType.hasPrefix("application/vnd.docker.") }

    /// Every manifest (top first), each once.
    var allManifests: [BlobSummary] {
        var out = [BlobSummary(digest: digest, mediaType: mediaType, size: size)]
        for m in manifests where m.digest != digest {
            out.append(BlobSummary(digest: m.digest, mediaType: m.mediaType, size: m.size))
        }
        return out
    }

    /// Reads a blob (or manifest) from the image's layout.
    func layoutBlob(_ digest: String) throws -> Data {
        let hex = digest.split(separator: ":").last.map(String.init) ?? digest
        return try Data(contentsOf: URL(fileURLWithPath: layout).appendingPathComponent("blobs/sha256/\(hex)"))
    }
}

// MARK: - Locations

/// Tests/IntegrationTests/Fixtures, found from this source file's path.
func fixturesDirectory() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
}

/// The cove executable: `$COVE_BIN` if set, else `cove` next to the test runner (`swift build` puts both in
/// .build/<triple>/debug).
func coveBinary() throws -> String {
    let env = ProcessInfo.processInfo.environment
    if let bin = env["COVE_BIN"], !bin.isEmpty {
        guard FileManager.default.isExecutableFile(atPath: bin) else { throw IntegrationError("COVE_BIN=\(bin) is not an executable") }
        return bin
    }
    var dirs: [URL] = []
    let selfExe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    dirs.append(selfExe.deletingLastPathComponent())
    if let exe = Bundle.main.executableURL { dirs.append(exe.resolvingSymlinksInPath().deletingLastPathComponent()) }
    dirs.append(Bundle.main.bundleURL.deletingLastPathComponent())
    if let arg0 = CommandLine.arguments.first {
        dirs.append(URL(fileURLWithPath: arg0).resolvingSymlinksInPath().deletingLastPathComponent())
    }
    for dir in dirs {
        // An .xctest bundle directory (macOS) sits next to cove too.
        for candidate in [dir.appendingPathComponent("cove"), dir.deletingLastPathComponent().appendingPathComponent("cove")]
        where FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate.path
        }
    }
    throw IntegrationError("cannot find the cove executable next to the test runner (looked in \(dirs.map(\.path))); run `swift build` or set COVE_BIN")
}

/// Tools the integration tests need on PATH (Debian: docker-registry skopeo apache2-utils openssl curl python3).
func missingIntegrationTools() -> [String] {
    ["docker-registry", "skopeo", "htpasswd", "openssl", "curl", "python3", "timeout"].filter { which($0) == nil }
}

// MARK: - skopeo

/// Runs skopeo with an isolated (empty) auth file, so credentials on the machine never leak into a test.
func skopeo(_ arguments: [String], authFile: String? = nil, timeout: Double = 180) async throws -> CommandResult {
    let auth = authFile ?? FileManager.default.temporaryDirectory.appendingPathComponent("cove-skopeo-noauth.json").path
    return try await runCommand("skopeo", arguments, environment: ["REGISTRY_AUTH_FILE": auth], timeout: timeout)
}

// MARK: - Fixture

enum RegistryMode: String, Sendable {
    case plain, token, htpasswd
}

/// A running Cove process and the config it was started with.
final class CoveHandle: @unchecked Sendable {
    let port: Int
    let process: ProcessHandle
    let configPath: String
    let storage: String
    var host: String { "127.0.0.1:\(port)" }
    var url: String { "http://127.0.0.1:\(port)" }

    init(port: Int, process: ProcessHandle, configPath: String, storage: String) {
        self.port = port
        self.process = process
        self.configPath = configPath
        self.storage = storage
    }

    func logTail(_ lines: Int = 60) -> String { process.logTail(lines) }
    func stop() { process.stop() }
}

final class Fixture: @unchecked Sendable {
    static let username = "alice"
    static let password = "s3cret-pw-42"
    static let service = "cove-test-registry"
    static let issuerName = "cove-test-issuer"
    static let imageNames = ["single", "index", "dockerlist"]

    let mode: RegistryMode
    let dir: URL
    let images: [String: ImageSummary]
    private(set) var registryPort = 0
    private(set) var registry: ProcessHandle?
    private(set) var issuer: ProcessHandle?
    private(set) var issuerPort: Int?
    private let lock = NSLock()
    private var coves: [CoveHandle] = []
    private var isShutDown = false

    var registryHost: String { "127.0.0.1:\(registryPort)" }
    var registryURL: String { "http://127.0.0.1:\(registryPort)" }
    var issuerURL: String? { issuerPort.map { "http://127.0.0.1:\($0)" } }
    var logDirectory: URL { dir.appendingPathComponent("logs") }
    var credentials: String { "\(Fixture.username):\(Fixture.password)" }
    /// Where skopeo's (empty) auth file lives.
    var authFile: String { dir.appendingPathComponent("no-auth.json").path }

    /// Sets everything up: images, (issuer,) registry. Push with `push`/`pushAll`, start Cove with `startCove`.
    init(
        mode: RegistryMode = .plain,
        privatePrefixes: [String] = ["private"],
        tokenExpiresIn: Int = 300,
        blobSize: Int? = nil
    ) async throws {
        let missing = missingIntegrationTools()
        guard missing.isEmpty else {
            throw IntegrationError("integration tests need these on PATH: \(missing.joined(separator: ", ")) (Debian: apt-get install docker-registry skopeo apache2-utils openssl curl python3)")
        }
        self.mode = mode
        dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("cove-it-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)

        var args = [fixturesDirectory().appendingPathComponent("make_images.py").path, dir.appendingPathComponent("images").path]
        if let blobSize { args += ["--blob-size", String(blobSize)] }
        let made = try await runCommand("python3", args, timeout: 300)
        guard made.succeeded else {
            try? FileManager.default.removeItem(at: dir)
            throw IntegrationError("make_images.py failed:\n\(made.summary)")
        }
        do {
            images = try JSONDecoder().decode([String: ImageSummary].self, from: made.stdout)
        } catch {
            try? FileManager.default.removeItem(at: dir)
            throw IntegrationError("cannot decode make_images.py output: \(error)\n\(made.stdoutText.prefix(2000))")
        }
        do {
            if mode == .token { try await startIssuer(privatePrefixes: privatePrefixes, expiresIn: tokenExpiresIn) }
            try await startRegistry()
        } catch {
            shutdown()
            throw error
        }
    }

    func image(_ name: String) -> ImageSummary {
        guard let img = images[name] else { fatalError("no fixture image \(name); have \(images.keys.sorted())") }
        return img
    }

    private var fixtures: URL { fixturesDirectory() }

    private func startIssuer(privatePrefixes: [String], expiresIn: Int) async throws {
        let key = dir.appendingPathComponent("token/key.pem").path
        let cert = dir.appendingPathComponent("token/cert.pem").path
        let script = fixtures.appendingPathComponent("token_issuer.py").path
        let gen = try await runCommand("python3", [script, "--key", key, "--cert", cert, "--generate-only"], timeout: 60)
        guard gen.succeeded else { throw IntegrationError("token key generation failed:\n\(gen.summary)") }
        var lastError: Error?
        for _ in 0..<3 {
            let port = try freePort()
            var args = [script, "--port", String(port), "--key", key, "--cert", cert,
                        "--issuer", Fixture.issuerName, "--service", Fixture.service,
                        "--user", credentials, "--expires-in", String(expiresIn)]
            for p in privatePrefixes { args += ["--private-prefix", p] }
            let handle = try ProcessHandle(name: "token-issuer", executable: "python3", arguments: args, logDirectory: logDirectory)
            do {
                try await waitForHTTP("http://127.0.0.1:\(port)/healthz", timeout: 20, expectStatus: 200, process: handle)
                issuer = handle
                issuerPort = port
                return
            } catch {
                handle.stop()
                lastError = error
            }
        }
        throw lastError ?? IntegrationError("token issuer did not start")
    }

    /// Starts (or restarts, on a new port) the upstream registry. Storage persists across restarts.
    func startRegistry() async throws {
        var lastError: Error?
        for _ in 0..<3 {
            let port = try freePort()
            var args = [fixtures.appendingPathComponent("registry.py").path, "--mode", mode.rawValue,
                        "--port", String(port), "--root", dir.appendingPathComponent("registry").path]
            switch mode {
            case .plain:
                break
            case .token:
                args += ["--realm", "\(issuerURL!)/token", "--service", Fixture.service, "--issuer", Fixture.issuerName,
                         "--rootcertbundle", dir.appendingPathComponent("token/cert.pem").path]
            case .htpasswd:
                args += ["--user", credentials]
            }
            let handle = try ProcessHandle(name: "registry", executable: "python3", arguments: args, logDirectory: logDirectory)
            do {
                try await waitForHTTP("http://127.0.0.1:\(port)/v2/", timeout: 30, process: handle)
                registry = handle
                registryPort = port
                return
            } catch {
                handle.stop()
                lastError = error
            }
        }
        throw lastError ?? IntegrationError("registry did not start")
    }

    /// Stops the upstream registry (to prove that pulls are served from Cove's cache).
    func stopRegistry() {
        registry?.stop()
    }

    /// Requests the upstream registry saw, from its access log, e.g. `registryRequests("GET", "/v2/single/manifests/")`.
    func registryRequests(_ method: String? = nil, pathPrefix: String = "/v2/") -> [String] {
        guard let log = registry?.stdout else { return [] }
        return log.split(separator: "\n").map(String.init).filter { line in
            guard let q = line.firstIndex(of: "\"") else { return false }
            let request = line[line.index(after: q)...]
            let parts = request.split(separator: " ", maxSplits: 2)
            guard parts.count >= 2 else { return false }
            return (method == nil || parts[0] == method!) && parts[1].hasPrefix(pathPrefix)
        }
    }

    /// The token issuer's /stats JSON (token mode only).
    func issuerStats() async throws -> [String: Any] {
        guard let issuerURL else { throw IntegrationError("no token issuer in \(mode) mode") }
        let r = try await httpRequest("GET", "\(issuerURL)/stats")
        guard r.status == 200, let obj = try JSONSerialization.jsonObject(with: r.body) as? [String: Any] else {
            throw IntegrationError("token issuer /stats: \(r.transcript)")
        }
        return obj
    }

    /// Pushes fixture image `name` to `repository` under each tag, byte-exact, with credentials unless plain.
    func push(_ name: String, to repository: String? = nil, tags: [String] = ["v1"]) async throws {
        let img = image(name)
        let repo = repository ?? name
        for tag in tags {
            if img.isDockerMediaType {
                // skopeo 1.9 only reads OCI media types from an OCI layout's index.json ("no descriptor found
                // for reference"), and converting would change the digests: push with the registry API.
                var args = [fixtures.appendingPathComponent("push_image.py").path, img.layout, registryURL, repo,
                            "--tag", img.tag, "--as-tag", tag]
                if mode != .plain { args += ["--user", credentials] }
                let r = try await runCommand("python3", args, timeout: 120)
                guard r.succeeded else { throw IntegrationError("push_image.py \(name) → \(repo):\(tag) failed:\n\(r.summary)") }
                guard r.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == img.digest else {
                    throw IntegrationError("registry stored \(r.stdoutText) for \(name), expected \(img.digest)")
                }
            } else {
                var args = ["copy", "--all", "--preserve-digests", "--dest-tls-verify=false"]
                if mode != .plain { args += ["--dest-creds", credentials] }
                args += ["oci:\(img.layout):\(img.tag)", "docker://\(registryHost)/\(repo):\(tag)"]
                let r = try await skopeo(args, authFile: authFile)
                guard r.succeeded else {
                    throw IntegrationError("skopeo push \(name) → \(repo):\(tag) failed:\n\(r.summary)\n\(registry?.logTail() ?? "")")
                }
            }
        }
    }

    /// Pushes the three images to repositories named like them, each prefixed with `prefix` ("" or "private/").
    func pushAll(prefix: String = "", tags: [String] = ["v1"]) async throws {
        for name in Fixture.imageNames where images[name] != nil {
            try await push(name, to: prefix + name, tags: tags)
        }
    }

    /// Starts a Cove in front of the upstream. `withCredentials` adds username + password_file. `upstreamURL`
    /// defaults to the registry. `extraYAML` is appended to the config verbatim (top-level keys).
    func startCove(
        withCredentials: Bool = false,
        upstreamURL: String? = nil,
        tagTTL: String = "5m",
        extraYAML: String = "",
        registriesYAML: String? = nil,
        environment: [String: String] = [:],
        startTimeout: Double = 60
    ) async throws -> CoveHandle {
        let bin = try coveBinary()
        let n = lock.withLock { coves.count }
        let base = dir.appendingPathComponent("cove-\(n)")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        let storage = base.appendingPathComponent("cove-data").path
        var lastError: Error?
        for attempt in 0..<3 {
            let port = try freePort()
            var yaml = """
            listen: "127.0.0.1:\(port)"
            storage: "\(storage)"

            """
            // Either a `registries:` section of the caller's, or the one-upstream shorthand.
            yaml += registriesYAML.map { $0 + "\n" } ?? """
            upstream:
              url: "\(upstreamURL ?? registryURL)"

            """
            if withCredentials {
                let pwFile = base.appendingPathComponent("upstream-password")
                try Fixture.password.write(to: pwFile, atomically: true, encoding: .utf8)
                yaml += """
                  username: "\(Fixture.username)"
                  password_file: "\(pwFile.path)"

                """
            }
            yaml += """
            cache:
              tag_ttl: \(tagTTL)
            log_level: debug

            """
            if !extraYAML.isEmpty { yaml += extraYAML + "\n" }
            let config = base.appendingPathComponent("cove.yml")
            try yaml.write(to: config, atomically: true, encoding: .utf8)
            let handle = try ProcessHandle(
                name: "cove-\(n)-\(attempt)", executable: bin, arguments: ["serve", "--config", config.path],
                environment: environment, logDirectory: logDirectory)
            do {
                try await waitForHTTP("http://127.0.0.1:\(port)/v2/", timeout: startTimeout, expectStatus: 200, process: handle)
                let cove = CoveHandle(port: port, process: handle, configPath: config.path, storage: storage)
                lock.withLock { coves.append(cove) }
                return cove
            } catch {
                handle.stop()
                lastError = IntegrationError("cove did not start with config:\n\(yaml)\n\(error)")
            }
        }
        throw lastError ?? IntegrationError("cove did not start")
    }

    /// Stops every child process and removes the temp dir (kept with COVE_KEEP_FIXTURES=1). Idempotent.
    func shutdown() {
        let toStop: [CoveHandle]? = lock.withLock {
            if isShutDown { return nil }
            isShutDown = true
            return coves
        }
        guard let toStop else { return }
        for c in toStop { c.stop() }
        registry?.stop()
        issuer?.stop()
        if ProcessInfo.processInfo.environment["COVE_KEEP_FIXTURES"] == "1" {
            print("cove integration fixture kept at \(dir.path)")
        } else {
            try? FileManager.default.removeItem(at: dir)
        }
    }

    deinit { shutdown() }
}
