// Real clients through a Cove with a single unnamed upstream (`upstream: url:` only — what `--upstream URL`
// configures): Debian's containerd with the README's hosts.toml recipe (it adds `?ns=docker.io`), skopeo listing
// tags, and dockerd- and podman-shaped requests (no `ns`). Upstream: distribution 2.8 on 127.0.0.1.
import Foundation
import Testing

@Suite("Real clients through a single-upstream Cove", .serialized)
struct ClientShapesTests {
    /// containerd 1.6 as its own daemon (private root, state and socket; CRI off), stopped at the end.
    final class Containerd: @unchecked Sendable {
        let dir: URL
        let process: ProcessHandle
        var socket: String { dir.appendingPathComponent("containerd.sock").path }

        init(in parent: URL, logDirectory: URL) async throws {
            dir = parent.appendingPathComponent("containerd")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let config = """
            version = 2
            root = "\(dir.path)/root"
            state = "\(dir.path)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "\(dir.path)/containerd.sock"
            [ttrpc]
              address = "\(dir.path)/containerd-ttrpc.sock"
            [plugins."io.containerd.internal.v1.opt"]
              path = "\(dir.path)/opt"

            """
            let configPath = dir.appendingPathComponent("config.toml").path
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            process = try ProcessHandle(name: "containerd", executable: "containerd", arguments: ["--config", configPath],
                                        logDirectory: logDirectory, maxLifetime: 300)
            for _ in 0..<100 where !FileManager.default.fileExists(atPath: socket) {
                try await Task.sleep(for: .milliseconds(100))
            }
            guard FileManager.default.fileExists(atPath: socket) else {
                process.stop()
                throw IntegrationError("containerd did not start:\n\(process.logTail())")
            }
        }

        func ctr(_ arguments: [String]) async throws -> CommandResult {
            try await runCommand("ctr", ["--address", socket, "--namespace", "cove-test"] + arguments, timeout: 120)
        }

        func stop() { process.stop() }
    }

    @Test func containerdPullsADockerHubImageThroughTheReadmeRecipe() async throws {
        guard which("containerd") != nil, which("ctr") != nil, getuid() == 0 else {
            Issue.record("needs Debian's containerd and root (scripts/test installs containerd; CI runs as root)")
            return
        }
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        // Docker Hub's official images live under library/ upstream.
        try await fixture.push("single", to: "library/single")
        try await fixture.push("index", to: "library/multi")
        let cove = try await fixture.startCove()
        let containerd = try await Containerd(in: fixture.dir, logDirectory: fixture.logDirectory)
        defer { containerd.stop() }

        // The README's hosts.toml, with the fallback server on a closed loopback port so that nothing can
        // leave this machine if Cove failed.
        let hosts = fixture.dir.appendingPathComponent("certs.d/docker.io")
        try FileManager.default.createDirectory(at: hosts, withIntermediateDirectories: true)
        try """
        server = "http://127.0.0.1:\(try refusedPort())"
        [host."\(cove.url)"]
          capabilities = ["pull", "resolve"]
          skip_verify = true

        """.write(to: hosts.appendingPathComponent("hosts.toml"), atomically: true, encoding: .utf8)
        let hostsDir = fixture.dir.appendingPathComponent("certs.d").path

        for (ref, image) in [("docker.io/library/single:v1", fixture.image("single")), ("docker.io/library/multi:v1", fixture.image("index"))] {
            let fetched = try await containerd.ctr(["content", "fetch", "--all-platforms", "--hosts-dir", hostsDir, ref])
            #expect(fetched.succeeded, "\(fetched.summary)\n\(cove.logTail())")
            let listed = try await containerd.ctr(["content", "ls", "--quiet"])
            for digest in image.allManifests.map(\.digest) + image.blobs.map(\.digest) {
                #expect(listed.stdoutText.contains(digest), "\(ref): containerd lacks \(digest)")
            }
        }
        // Cove answered containerd's ?ns=docker.io from the one upstream it has.
        #expect(fixture.registryRequests("GET", pathPrefix: "/v2/library/single/manifests/").count == 1)
        #expect(!cove.logTail(400).contains("not configured"))
    }

    @Test func skopeoListsEveryTagAndDockerdAndPodmanShapedRequestsResolve() async throws {
        let fixture = try await Fixture()
        defer { fixture.shutdown() }
        let tags = ["1.0", "1.1", "2.0", "latest"]
        try await fixture.push("single", to: "library/single", tags: tags)
        let cove = try await fixture.startCove()
        let image = fixture.image("single")

        let listed = try await skopeo(["list-tags", "--tls-verify=false", "docker://\(cove.host)/library/single"], authFile: fixture.authFile)
        #expect(listed.succeeded, "\(listed.summary)")
        let json = try JSONSerialization.jsonObject(with: listed.stdout) as? [String: Any]
        #expect((json?["Tags"] as? [String])?.sorted() == tags)

        // dockerd (registry-mirrors) and podman ([[registry.mirror]]) send the library/ name and no ns.
        let accept = [
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
            "Accept: application/vnd.docker.distribution.manifest.list.v2+json",
            "Accept: application/vnd.oci.image.index.v1+json",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ]
        for method in ["HEAD", "GET"] {
            let r = try await httpRequest(method, "\(cove.url)/v2/library/single/manifests/latest", headers: accept)
            #expect(r.status == 200 && r.header("Docker-Content-Digest") == image.digest, "\(r.transcript)")
        }
        // containerd-shaped with a registry Cove was never told about: the single upstream serves it anyway.
        let ns = try await httpRequest("GET", "\(cove.url)/v2/library/single/manifests/2.0?ns=registry.example.com", headers: accept)
        #expect(ns.status == 200 && ns.header("Docker-Content-Digest") == image.digest, "\(ns.transcript)")
    }
}
