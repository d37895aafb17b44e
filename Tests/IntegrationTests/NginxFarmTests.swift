// deploy/nginx/cove-farm.conf, run by the real nginx (Debian's package) on loopback in front of three real
// `cove serve` processes and a real upstream registry, pulled through with skopeo. The committed file is used as
// it is, except for the three things that are the operator's to fill in: the nodes' addresses in
// `upstream cove_farm`, the `listen` port, and the log directory (writable without root).
import Foundation
import Testing

/// An nginx running the farm config from a temp prefix (never the system's nginx or its files).
final class FarmProxy: @unchecked Sendable {
    static let committed = "deploy/nginx/cove-farm.conf"

    let dir: URL
    let port: Int
    let mainConfig: URL
    private(set) var process: ProcessHandle?

    var host: String { "127.0.0.1:\(port)" }
    var accessLog: URL { dir.appendingPathComponent("logs/cove-farm.access.log") }

    /// Writes the farm file (addresses substituted when `nodes` is given) and a main config that includes it.
    /// - Throws: `IntegrationError` when the committed file does not have the shape substituted here.
    init(dir: URL, nodes: [String]?, port: Int) throws {
        self.dir = dir
        self.port = port
        let fm = FileManager.default
        for sub in ["logs", "tmp"] { try fm.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true) }
        var text = try String(contentsOf: repositoryRoot().appendingPathComponent(Self.committed), encoding: .utf8)
        let logs = "/var/log/nginx/"
        guard text.contains(logs) else { throw IntegrationError("\(Self.committed): no access_log under \(logs)") }
        text = text.replacingOccurrences(of: logs, with: dir.appendingPathComponent("logs").path + "/")
        if let nodes {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            let serverLines = lines.indices.filter { lines[$0].trimmingCharacters(in: .whitespaces).hasPrefix("server ") && lines[$0].contains(":") }
            guard serverLines.count == nodes.count else {
                throw IntegrationError("\(Self.committed) lists \(serverLines.count) upstream servers, the test runs \(nodes.count) nodes")
            }
            var out = lines
            for (i, n) in zip(serverLines, nodes) {
                // `    server ADDRESS:PORT params;` → the node's address, parameters kept.
                var words = out[i].split(separator: " ", omittingEmptySubsequences: false).map(String.init)
                guard let at = words.firstIndex(where: { $0.contains(":") }) else { throw IntegrationError("odd server line \(out[i])") }
                words[at] = n + (words[at].hasSuffix(";") ? ";" : "")
                out[i] = words.joined(separator: " ")
            }
            text = out.joined(separator: "\n")
            let listen = "listen 5000;"
            guard text.components(separatedBy: listen).count == 2 else { throw IntegrationError("\(Self.committed): expected one `\(listen)`") }
            text = text.replacingOccurrences(of: listen, with: "listen 127.0.0.1:\(port);")
        }
        let farm = dir.appendingPathComponent("cove-farm.conf")
        try text.write(to: farm, atomically: true, encoding: .utf8)
        let tmp = dir.appendingPathComponent("tmp").path
        mainConfig = dir.appendingPathComponent("nginx.conf")
        try """
        worker_processes 1;
        error_log \(dir.path)/logs/error.log info;
        pid \(dir.path)/nginx.pid;
        events { worker_connections 256; }
        http {
            client_body_temp_path \(tmp)/body;
            proxy_temp_path \(tmp)/proxy;
            fastcgi_temp_path \(tmp)/fastcgi;
            uwsgi_temp_path \(tmp)/uwsgi;
            scgi_temp_path \(tmp)/scgi;
            access_log off;
            include \(farm.path);
        }

        """.write(to: mainConfig, atomically: true, encoding: .utf8)
    }

    static func nginx() -> String? {
        which("nginx") ?? (FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") ? "/usr/sbin/nginx" : nil)
    }

    /// `nginx -t` on the config.
    func test() async throws -> CommandResult {
        try await runCommand(Self.nginx() ?? "nginx", ["-t", "-p", dir.path, "-c", mainConfig.path], timeout: 30)
    }

    /// Runs nginx in the foreground (a child of the test) and waits for its own health location.
    func start() async throws {
        let handle = try ProcessHandle(name: "nginx-farm", executable: Self.nginx() ?? "nginx",
                                       arguments: ["-p", dir.path, "-c", mainConfig.path, "-g", "daemon off;"],
                                       logDirectory: dir.appendingPathComponent("logs"), maxLifetime: 300)
        process = handle
        try await waitForHTTP("http://\(host)/nginx-healthz", timeout: 20, expectStatus: 200, process: handle)
    }

    func stop() { process?.stop() }

    /// Requests in the access log (the `cove_farm` format): the line, its hash key, the node that answered. After
    /// a retry `$upstream_addr` lists every node tried; the last one answered.
    func requests() -> [(line: String, key: String, node: String)] {
        let text = (try? String(contentsOf: accessLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            guard let key = Self.field(line, "key"), let nodes = Self.field(line, "node") else { return nil }
            let last = nodes.split(separator: ",").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? nodes
            return (String(line), key, last)
        }
    }

    /// Blob requests in the access log: (digest, the node that answered), in order.
    func blobRequests() -> [(digest: String, node: String)] {
        requests().filter { $0.line.contains("/blobs/sha256:") && $0.key.hasPrefix("sha256:") }.map { ($0.key, $0.node) }
    }

    private static func field(_ line: Substring, _ name: String) -> String? {
        guard let r = line.range(of: " \(name)=\"") else { return nil }
        let rest = line[r.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }
}

@Suite("nginx farm", .serialized, .timeLimit(.minutes(4)))
struct NginxFarmTests {
    /// The committed file is valid nginx configuration (inside `http {}`), as nginx itself judges it; and the
    /// check is real: the same file with a directive broken fails.
    @Test func farmConfigPassesNginxTest() async throws {
        guard FarmProxy.nginx() != nil else {
            Issue.record("nginx is missing (scripts/test installs Debian's nginx)")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-nginx-t-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let proxy = try FarmProxy(dir: dir, nodes: nil, port: 5000)
        let r = try await proxy.test()
        #expect(r.succeeded && r.stderrText.contains("test is successful"), "\(r.summary)")

        let farm = dir.appendingPathComponent("cove-farm.conf")
        let text = try String(contentsOf: farm, encoding: .utf8)
        try text.replacingOccurrences(of: "hash $cove_farm_key consistent;", with: "hash $cove_farm_key consistant;")
            .write(to: farm, atomically: true, encoding: .utf8)
        let broken = try await proxy.test()
        #expect(!broken.succeeded && broken.stderrText.contains("consistant"), "\(broken.summary)")
    }

    /// Three Coves behind the farm: every blob is fetched from the upstream once and stored on exactly one node,
    /// however many repositories share it and however often it is pulled; the node that holds it is the one nginx
    /// sends its requests to. Then one node stops: its blobs are fetched once more, each by one other node, and
    /// every pull still succeeds; the other nodes' blobs are not fetched again.
    @Test func eachBlobIsCachedOnceAcrossTheFarm() async throws {
        guard FarmProxy.nginx() != nil else {
            Issue.record("nginx is missing (scripts/test installs Debian's nginx)")
            return
        }
        let started = Date()
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        // Two repositories per OCI image: the same blobs under two names (shared layers).
        let pulls: [(repo: String, image: String)] = [("single", "single"), ("team/single-copy", "single"),
                                                      ("index", "index"), ("team/index-copy", "index"),
                                                      ("dockerlist", "dockerlist")]
        for p in pulls { try await f.push(p.image, to: p.repo) }
        // Every node mirrors the registry as `docker.io` (names as they are, no library/ prefix): then `?ns=` and
        // path prefixes select a registry, and the farm must pass them on intact.
        let registry = """
        upstream:
          url: "\(f.registryURL)"
          name: docker.io
          library_prefix: false
        """
        var nodes: [CoveHandle] = []
        for _ in 0..<3 { nodes.append(try await f.startCove(registriesYAML: registry)) }
        let proxy = try FarmProxy(dir: f.dir.appendingPathComponent("nginx"), nodes: nodes.map(\.host), port: try freePort())
        defer { proxy.stop() }
        try await proxy.start()

        var pullCount = 0
        try FileManager.default.createDirectory(at: f.dir.appendingPathComponent("pulls"), withIntermediateDirectories: true)
        func pullAll(_ round: String) async throws {
            for p in pulls {
                let img = f.image(p.image)
                pullCount += 1
                let dest = f.dir.appendingPathComponent("pulls/\(round)-\(pullCount)")
                let r = try await skopeo(["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0",
                                          "docker://\(proxy.host)/\(p.repo):v1",
                                          img.isDockerMediaType ? "dir:\(dest.path)" : "oci:\(dest.path):pulled"],
                                         authFile: f.authFile, timeout: 120)
                guard r.succeeded else {
                    Issue.record("\(round): pull of \(p.repo) through the farm failed:\n\(r.summary)\n\(nodes.map { $0.logTail(10) }.joined(separator: "\n"))")
                    continue
                }
                try await verifyPulled(dest, img, "\(round) \(p.repo)")
            }
        }

        let blobs = Set(pulls.flatMap { f.image($0.image).blobs.map(\.digest) })
        func upstreamFetches() -> [String: Int] {
            var counts: [String: Int] = [:]
            for line in f.registryRequests("GET") {
                guard let r = line.range(of: "/blobs/sha256:") else { continue }
                let digest = "sha256:" + line[r.upperBound...].prefix(64)
                counts[digest, default: 0] += 1
            }
            return counts
        }
        func holders(_ digest: String, among live: [CoveHandle]) -> [CoveHandle] {
            let hex = String(digest.dropFirst("sha256:".count))
            return live.filter { node in
                CoveServerFiles.blobHexes(storage: node.storage).contains(hex)
            }
        }

        try await pullAll("round1")
        try await pullAll("round2")
        let fetched = upstreamFetches()
        for d in blobs {
            #expect(fetched[d] == 1, "\(d) was fetched from the upstream \(fetched[d] ?? 0) times")
            #expect(holders(d, among: nodes).count == 1, "\(d) is stored on \(holders(d, among: nodes).map(\.host))")
        }
        // A repository's tag is resolved by one node, once (tag_ttl 5m): its manifests are keyed by repository.
        for p in pulls {
            let tagFetches = f.registryRequests("GET", pathPrefix: "/v2/\(p.repo)/manifests/v1")
            #expect(tagFetches.count == 1, "\(p.repo):v1 was fetched \(tagFetches.count) times:\n\(tagFetches.joined(separator: "\n"))")
        }
        // The query string and the path reach the node as sent: ?ns= of another registry is refused by the node
        // (403 DENIED), ?ns=docker.io and the /v2/docker.io/ path prefix are served.
        let accept = manifestAcceptTypes.map { "Accept: \($0)" }
        let otherNS = try await httpRequest("GET", "http://\(proxy.host)/v2/single/manifests/v1?ns=ghcr.io", headers: accept)
        #expect(otherNS.status == 403 && otherNS.errorCodes == ["DENIED"], "\(otherNS.transcript)")
        let hubNS = try await httpRequest("GET", "http://\(proxy.host)/v2/single/manifests/v1?ns=docker.io", headers: accept)
        #expect(hubNS.status == 200 && hubNS.header("Docker-Content-Digest") == f.image("single").digest, "\(hubNS.transcript)")
        let prefixed = try await httpRequest("HEAD", "http://\(proxy.host)/v2/docker.io/single/manifests/v1", headers: accept)
        #expect(prefixed.status == 200 && prefixed.header("Docker-Content-Digest") == f.image("single").digest, "\(prefixed.transcript)")
        // ... and both spellings of the repository are one key, on one node.
        let spelled = proxy.requests().filter { $0.line.contains("/single/manifests/v1") && ($0.line.contains("ns=docker.io") || $0.line.contains("/v2/docker.io/")) }
        #expect(spelled.count == 2 && Set(spelled.map(\.key)) == ["docker.io/single"] && Set(spelled.map(\.node)).count == 1, "\(spelled)")

        // nginx sent every request for a blob to one node, the one that stores it.
        var routedTo: [String: Set<String>] = [:]
        for r in proxy.blobRequests() { routedTo[r.digest, default: []].insert(r.node) }
        for d in blobs {
            let routed = routedTo[d] ?? []
            #expect(routed.count == 1, "\(d) was served by \(routed.sorted())")
            #expect(routed.first == holders(d, among: nodes).first?.host, "\(d): routed to \(routed.sorted()), stored on \(holders(d, among: nodes).map(\.host))")
        }
        let share = nodes.map { n in blobs.filter { holders($0, among: [n]).count == 1 }.count }
        print("farm: \(blobs.count) distinct blobs, \(pullCount) pulls; blobs per node \(share)")

        // One node leaves: the one holding most blobs (so that something moves).
        let leaving = nodes[share.firstIndex(of: share.max() ?? 0) ?? 0]
        let moved = blobs.filter { holders($0, among: [leaving]).count == 1 }
        let live = nodes.filter { $0 !== leaving }
        leaving.stop()
        try await pullAll("after-stop")
        let refetched = upstreamFetches()
        for d in blobs {
            let expected = moved.contains(d) ? 2 : 1
            #expect(refetched[d] == expected, "\(d) (\(moved.contains(d) ? "on the stopped node" : "on a live node")): fetched \(refetched[d] ?? 0) times, expected \(expected)")
            #expect(holders(d, among: live).count == 1, "\(d) is stored on live nodes \(holders(d, among: live).map(\.host))")
        }
        #expect(proxy.process?.isRunning == true)
        let elapsed = Date().timeIntervalSince(started)
        print(String(format: "farm test: %.1f s (moved %d blobs)", elapsed, moved.count))
    }
}

/// Blob files of a storage, read from the directory tree (independently of Cove's index).
enum CoveServerFiles {
    /// The file names (hex digests) under `<storage>/blobs/`.
    static func blobHexes(storage: String) -> Set<String> {
        let root = URL(fileURLWithPath: storage).appendingPathComponent("blobs")
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var out: Set<String> = []
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            out.insert(url.lastPathComponent)
        }
        return out
    }
}
