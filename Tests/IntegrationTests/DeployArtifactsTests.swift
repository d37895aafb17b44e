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
}
