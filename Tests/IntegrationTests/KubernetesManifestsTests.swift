import Foundation
import Testing

/// deploy/kubernetes, parsed with PyYAML (no cluster here): every document is a well-formed object, the objects
/// refer to each other by the right names and labels, and the ports, probe paths and mount paths agree with
/// the Cove config in the ConfigMap — which the real `cove check-config` accepts.
@Suite("Kubernetes manifests")
struct KubernetesManifestsTests {
    static let directory = "deploy/kubernetes"

    /// kustomization.yaml's resources, each parsed, as (file, document) pairs.
    static func objects() async throws -> (kustomization: [String: Any], objects: [[String: Any]]) {
        let k = "\(directory)/kustomization.yaml"
        let kust = try #require(((try await parseDeployFiles([k]))[k] as? [Any])?.first as? [String: Any])
        let resources = try #require(kust["resources"] as? [String])
        let files = resources.map { "\(directory)/\($0)" }
        let parsed = try await parseDeployFiles(files)
        var objects: [[String: Any]] = []
        for f in files {
            let docs = try #require(parsed[f] as? [Any], "\(f) did not parse")
            for case let doc as [String: Any] in docs { objects.append(doc) }
        }
        // Every manifest file in the directory is listed (none forgotten by kubectl apply -k).
        let onDisk = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot().appendingPathComponent(directory).path)
            .filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" }
        #expect(Set(onDisk) == Set(resources), "on disk \(onDisk.sorted()), listed \(resources.sorted())")
        return (kust, objects)
    }

    static func object(_ objects: [[String: Any]], kind: String, name: String) throws -> [String: Any] {
        try #require(objects.first { $0["kind"] as? String == kind && dig($0, "metadata", "name") as? String == name }, "no \(kind)/\(name)")
    }

    @Test func manifestsAgreeWithEachOtherAndWithTheConfig() async throws {
        let (kust, objects) = try await Self.objects()
        for o in objects {
            #expect(o["apiVersion"] is String && o["kind"] is String && dig(o, "metadata", "name") is String, "\(o)")
        }
        let kinds = objects.compactMap { $0["kind"] as? String }.sorted()
        #expect(kinds == ["ConfigMap", "Service", "Service", "StatefulSet"], "\(kinds)")

        let sts = try Self.object(objects, kind: "StatefulSet", name: "cove")
        let spec = try #require(sts["spec"] as? [String: Any])
        #expect(spec["replicas"] as? Int == 1)
        let pod = try #require(dig(spec, "template", "spec") as? [String: Any])
        let podLabels = try #require(dig(spec, "template", "metadata", "labels") as? [String: String])
        let selector = try #require(dig(spec, "selector", "matchLabels") as? [String: String])
        #expect(selector.allSatisfy { podLabels[$0.key] == $0.value }, "selector \(selector) vs labels \(podLabels)")
        #expect(pod["terminationGracePeriodSeconds"] as? Int == 30)

        // The container and its config file.
        let containers = try #require(pod["containers"] as? [[String: Any]])
        #expect(containers.count == 1)
        let c = try #require(containers.first)
        let imageName = try #require(c["image"] as? String)
        let kustImages = (kust["images"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(kustImages.contains(String(imageName.split(separator: ":")[0])), "kustomization images \(kustImages) do not name \(imageName)")
        let argv = (c["command"] as? [String] ?? []) + (c["args"] as? [String] ?? [])
        #expect(argv.first == "/usr/local/bin/cove" && argv.dropFirst().first == "serve", "\(argv)")
        let configPath = argv[try #require(argv.firstIndex(of: "--config")) + 1]
        let mounts = try #require(c["volumeMounts"] as? [[String: Any]])
        let configMount = try #require(mounts.first { $0["mountPath"] as? String == configPath }, "nothing mounted at \(configPath)")
        let volumes = try #require(pod["volumes"] as? [[String: Any]])
        let configVolume = try #require(volumes.first { $0["name"] as? String == configMount["name"] as? String })
        let cmName = try #require(dig(configVolume, "configMap", "name") as? String)
        let cm = try Self.object(objects, kind: "ConfigMap", name: cmName)
        let key = try #require(configMount["subPath"] as? String)
        let configText = try #require(dig(cm, "data", key) as? String, "ConfigMap \(cmName) has no key \(key)")
        let config = try await checkConfig(text: configText)
        #expect(config.listenHost == "0.0.0.0", "a pod must listen on all interfaces, not \(config.listenHost)")

        // The data volume: a claim template mounted at the config's storage path.
        let claims = try #require(spec["volumeClaimTemplates"] as? [[String: Any]])
        let claimNames = claims.compactMap { dig($0, "metadata", "name") as? String }
        let dataMount = try #require(mounts.first { claimNames.contains($0["name"] as? String ?? "") }, "no claim template is mounted")
        #expect(dataMount["mountPath"] as? String == config.storage, "data at \(String(describing: dataMount["mountPath"])), storage \(config.storage)")
        #expect(dataMount["subPath"] == nil, "Cove adopts a fresh volume (lost+found only) at its root")
        #expect((dig(claims, 0, "spec", "accessModes") as? [String]) == ["ReadWriteOnce"])
        #expect(dig(claims, 0, "spec", "resources", "requests", "storage") is String)

        // Port, probes.
        let ports = try #require(c["ports"] as? [[String: Any]])
        let port = try #require(ports.first { $0["containerPort"] as? Int == config.listenPort }, "no containerPort \(config.listenPort): \(ports)")
        let portName = try #require(port["name"] as? String)
        func probe(_ name: String) throws -> (path: String, port: Any?) {
            let get = try #require(dig(c, name, "httpGet") as? [String: Any], "\(name) is not an HTTP GET")
            return (get["path"] as? String ?? "", get["port"])
        }
        for (name, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let p = try probe(name)
            #expect(p.path == path, "\(name) asks \(p.path)")
            #expect(p.port as? String == portName || p.port as? Int == config.listenPort, "\(name) on port \(String(describing: p.port))")
        }

        // Non-root with a read-only root file system; the volume writable through fsGroup.
        let podSecurity = try #require(pod["securityContext"] as? [String: Any])
        #expect(podSecurity["runAsNonRoot"] as? Bool == true)
        let uid = try #require(podSecurity["runAsUser"] as? Int)
        #expect(uid != 0 && podSecurity["fsGroup"] as? Int == podSecurity["runAsGroup"] as? Int)
        let imageUser = try ContainerArtifactsTests.dockerfile().stages.last?.all("USER").last?.arguments
        #expect(imageUser == "\(uid):\(podSecurity["runAsGroup"] as? Int ?? -1)", "pod runs as \(uid), image as \(imageUser ?? "?")")
        #expect(dig(c, "securityContext", "readOnlyRootFilesystem") as? Bool == true)
        #expect(dig(c, "securityContext", "allowPrivilegeEscalation") as? Bool == false)
        #expect(dig(c, "resources", "requests", "memory") is String && dig(c, "resources", "limits", "memory") is String)

        // Services: the headless one governs the StatefulSet; both select the pods and reach the named port.
        let headless = try Self.object(objects, kind: "Service", name: try #require(spec["serviceName"] as? String))
        #expect(dig(headless, "spec", "clusterIP") as? String == "None")
        let clusterIP = try Self.object(objects, kind: "Service", name: "cove")
        #expect(dig(clusterIP, "spec", "type") as? String == "ClusterIP")
        for svc in [headless, clusterIP] {
            let sel = try #require(dig(svc, "spec", "selector") as? [String: String])
            #expect(sel.allSatisfy { podLabels[$0.key] == $0.value }, "selector \(sel)")
            let sp = try #require(dig(svc, "spec", "ports", 0) as? [String: Any])
            #expect(sp["port"] as? Int == config.listenPort)
            #expect(sp["targetPort"] as? String == portName || sp["targetPort"] as? Int == config.listenPort)
        }
    }

    /// Where kubectl is on the PATH (not a Debian package; CI may not have it), its built-in kustomize renders
    /// the directory with the image placeholder replaced.
    @Test func kustomizeRendersWhenKubectlIsPresent() async throws {
        guard let kubectl = which("kubectl") else { return }
        let r = try await runCommand(kubectl, ["kustomize", repositoryRoot().appendingPathComponent(Self.directory).path], timeout: 60)
        #expect(r.succeeded, "\(r.summary)")
        #expect(r.stdoutText.contains("image: registry.example.com/cove:latest"), "\(r.stdoutText.prefix(3000))")
        #expect(r.stdoutText.split(separator: "\n").filter { $0.hasPrefix("kind: ") }.count == 4, "\(r.stdoutText.prefix(3000))")
    }
}
