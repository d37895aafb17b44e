import Foundation
import Testing

/// The files under deploy/ and config.example.yml, checked with what runs here: the real `cove` binary,
/// `systemd-analyze verify`, and JSON/TOML parsers.
@Suite("Deploy artefacts", .serialized)
struct DeployArtifactsTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func exampleConfigPassesCheckConfig() async throws {
        let r = try await runCommand(try coveBinary(), ["check-config", "--config", Self.root.appendingPathComponent("config.example.yml").path])
        #expect(r.succeeded, "\(r.summary)")
        #expect(r.stdoutText.contains("registry docker.io"))
        #expect(r.stdoutText.contains("endpoint https://registry-1.docker.io: resolve_tags true"))
        #expect(r.stdoutText.contains("default_registry: docker.io"))
    }

    @Test func badConfigFailsNamingTheKey() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("bad.yml")
        try "cache:\n  tag_tll: 5m\n".write(to: file, atomically: true, encoding: .utf8)
        let r = try await runCommand(try coveBinary(), ["check-config", "--config", file.path])
        #expect(!r.succeeded)
        #expect((r.stderrText + r.stdoutText).contains("cache.tag_tll"), "\(r.summary)")
        let serve = try await runCommand(try coveBinary(), ["serve", "--config", file.path], timeout: 20)
        #expect(!serve.succeeded && !serve.timedOut, "serve must refuse a bad config at start-up:\n\(serve.summary)")
    }

    @Test func systemdUnitVerifies() async throws {
        guard let analyze = which("systemd-analyze") else {
            Issue.record("systemd-analyze is missing (scripts/test installs systemd)")
            return
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cove-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // systemd-analyze checks that ExecStart exists: point it at the binary under test.
        let unit = try String(contentsOf: Self.root.appendingPathComponent("deploy/systemd/cove.service"), encoding: .utf8)
        #expect(unit.contains("ExecStart=/usr/local/bin/cove serve --config /etc/cove/config.yml"))
        let copy = dir.appendingPathComponent("cove.service")
        try unit.replacingOccurrences(of: "/usr/local/bin/cove", with: try coveBinary()).write(to: copy, atomically: true, encoding: .utf8)
        // `systemctl reload cove` sends SIGHUP (Cove reloads its TLS certificate and htpasswd file).
        #expect(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        let r = try await runCommand(analyze, ["verify", copy.path], timeout: 60)
        let complaints = (r.stdoutText + r.stderrText).split(separator: "\n").filter { $0.contains("cove.service") }
        #expect(r.succeeded, "\(r.summary)")
        #expect(complaints.isEmpty, "\(complaints.joined(separator: "\n"))")
    }

    @Test func clientConfigsParse() async throws {
        let daemon = try Data(contentsOf: Self.root.appendingPathComponent("deploy/clients/daemon.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: daemon) as? [String: Any])
        #expect((json["registry-mirrors"] as? [String])?.first?.hasPrefix("http") == true)
        let script = """
        import sys, tomllib
        h = tomllib.load(open(sys.argv[1], "rb"))
        assert h["server"] == "https://registry-1.docker.io", h
        hosts = h["host"]
        assert any(set(v["capabilities"]) == {"pull", "resolve"} for v in hosts.values()), hosts
        r = tomllib.load(open(sys.argv[2], "rb"))
        reg = [x for x in r["registry"] if x["prefix"] == "docker.io"][0]
        assert reg["mirror"][0]["location"], reg
        print("ok")
        """
        let r = try await runCommand("python3", ["-c", script,
                                                 Self.root.appendingPathComponent("deploy/clients/containerd/certs.d/docker.io/hosts.toml").path,
                                                 Self.root.appendingPathComponent("deploy/clients/registries.conf").path])
        #expect(r.succeeded && r.stdoutText.contains("ok"), "\(r.summary)")
    }

    /// `host:port` of `scheme://host:port`.
    static func hostPort(_ url: String) -> String { url.components(separatedBy: "://").last ?? url }

    /// Every client snippet (plain HTTP and the TLS variants) parses with its client's format and names the same
    /// Cove address, on the port Cove listens on by default.
    @Test func clientSnippetsAgreeOnCove() async throws {
        let plain = ["deploy/clients/daemon.json", "deploy/clients/containerd/certs.d/docker.io/hosts.toml",
                     "deploy/clients/registries.conf", "deploy/clients/k3s/registries.yaml"]
        let tls = plain.map { $0.replacingOccurrences(of: "deploy/clients/", with: "deploy/clients/tls/") }
        let files = try await parseDeployFiles(plain + tls)
        let defaultPort = try await checkConfig(file: Self.root.appendingPathComponent("config.example.yml").path).listenPort
        let cove = "cove.internal:\(defaultPort)"
        var addresses: Set<String> = []
        for (dir, scheme) in [("deploy/clients/", "http"), ("deploy/clients/tls/", "https")] {
            let daemon = try #require(files[dir + "daemon.json"] as? [String: Any])
            let mirrors = try #require(daemon["registry-mirrors"] as? [String])
            #expect(mirrors == ["\(scheme)://\(cove)"], "\(dir)daemon.json: \(mirrors)")
            // dockerd trusts a mirror's own CA from /etc/docker/certs.d/<host:port>/ca.crt: never "insecure" with TLS.
            #expect((daemon["insecure-registries"] as? [String]) == (scheme == "http" ? [cove] : nil), "\(dir)daemon.json")
            addresses.formUnion(mirrors.map(Self.hostPort))

            let hosts = try #require(files[dir + "containerd/certs.d/docker.io/hosts.toml"] as? [String: Any])
            #expect(hosts["server"] as? String == "https://registry-1.docker.io")
            let hostTable = try #require(hosts["host"] as? [String: Any])
            #expect(Array(hostTable.keys) == ["\(scheme)://\(cove)"], "\(dir)hosts.toml: \(hostTable.keys)")
            let host = try #require(hostTable.values.first as? [String: Any])
            #expect(Set(host["capabilities"] as? [String] ?? []) == ["pull", "resolve"])
            if scheme == "https" {
                #expect((host["ca"] as? String)?.hasSuffix(".crt") == true && host["skip_verify"] == nil, "\(host)")
            }
            addresses.formUnion(hostTable.keys.map(Self.hostPort))

            let conf = try #require(files[dir + "registries.conf"] as? [String: Any])
            let hub = try #require((conf["registry"] as? [[String: Any]])?.first { $0["prefix"] as? String == "docker.io" })
            let mirror = try #require((hub["mirror"] as? [[String: Any]])?.first)
            #expect(mirror["location"] as? String == cove)
            #expect(mirror["insecure"] as? Bool == (scheme == "http"))
            addresses.insert(mirror["location"] as? String ?? "")

            let k3s = try #require((files[dir + "k3s/registries.yaml"] as? [Any])?.first as? [String: Any])
            for registry in ["docker.io", "ghcr.io"] {
                let endpoints = try #require(dig(k3s, "mirrors", registry, "endpoint") as? [String])
                #expect(endpoints == ["\(scheme)://\(cove)"], "\(dir)k3s \(registry): \(endpoints)")
                addresses.formUnion(endpoints.map(Self.hostPort))
            }
            let configs = try #require(k3s["configs"] as? [String: Any])
            if scheme == "https" {
                #expect((dig(configs, cove, "tls", "ca_file") as? String)?.hasSuffix(".crt") == true, "\(configs)")
                #expect(dig(configs, cove, "auth", "username") is String && dig(configs, cove, "auth", "password") is String)
            } else {
                #expect(configs.isEmpty)
            }
        }
        #expect(addresses == [cove], "snippets name \(addresses.sorted())")
    }

    /// README links every file under deploy/ (the Deploy section and "Pointing clients at Cove").
    @Test func readmeLinksEveryDeployFile() throws {
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        let deploy = Self.root.appendingPathComponent("deploy")
        let walker = try #require(FileManager.default.enumerator(at: deploy, includingPropertiesForKeys: [.isRegularFileKey]))
        var files: [String] = []
        for case let url as URL in walker where (try? url.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true {
            files.append("deploy/" + url.path.dropFirst(deploy.path.count + 1))
        }
        #expect(files.count >= 15, "\(files)")
        for f in files {
            #expect(readme.contains("](\(f))"), "README does not link \(f)")
        }
    }
}
