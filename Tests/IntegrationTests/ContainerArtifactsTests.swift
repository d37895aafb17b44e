import Foundation
import Testing

/// deploy/docker: the Dockerfile, the image's default config and compose.yml, checked with what runs without a
/// Docker engine: the Dockerfile's instructions against each other and the repository, the runtime packages
/// against Debian 12's archive (`apt-cache show`; this machine is bookworm, like the runtime image), the configs
/// with the real `cove check-config`, compose.yml with PyYAML.
@Suite("Container artefacts")
struct ContainerArtifactsTests {
    static let dockerfilePath = "deploy/docker/Dockerfile"
    static let imageConfigPath = "deploy/docker/config.yml"

    static func dockerfile() throws -> Dockerfile {
        Dockerfile(try String(contentsOf: repositoryRoot().appendingPathComponent(dockerfilePath), encoding: .utf8))
    }

    /// Multi-stage: a Swift build stage whose release binary is the one file the runtime stage copies, and a
    /// Debian 12 slim runtime stage that runs it as a fixed non-root uid with the cache on a volume.
    @Test func dockerfileStagesFitTogether() async throws {
        let df = try Self.dockerfile()
        #expect(df.stages.count == 2, "\(df.stages.map(\.image))")
        let build = try #require(df.stage("build"))
        let runtime = try #require(df.stages.last)
        #expect(build.image.hasPrefix("swift:6.3"), "build image \(build.image)")
        #expect(runtime.image == "debian:bookworm-slim", "runtime image \(runtime.image)")
        // Same Debian release on both sides: the binary links the libcurl/SQLite of the build image.
        #expect(build.image.hasSuffix("-bookworm"), "build image \(build.image) is not Debian 12")

        // The build command and the path its binary is copied from.
        let runs = build.all("RUN").map(\.arguments).joined(separator: "\n")
        let buildFlags = "-c release --static-swift-stdlib"
        #expect(runs.contains("swift build \(buildFlags) --product cove"), "\(runs)")
        let binPath = "\"$(swift build \(buildFlags) --show-bin-path)/cove\""
        let install = try #require(build.all("RUN").first { $0.arguments.contains(binPath) }, "no RUN copies the binary from \(binPath)")
        let installWords = install.arguments.components(separatedBy: binPath).last?.split(separator: " ").map(String.init) ?? []
        let built = try #require(installWords.first, "no destination after \(binPath)")
        #expect(built.hasPrefix("/"))
        #expect(runs.contains("libcurl4-openssl-dev") && runs.contains("libsqlite3-dev"), "build libraries: \(runs)")
        let copies = runtime.all("COPY").filter { $0.flags["from"] == "build" }
        #expect(copies.count == 1)
        let copy = try #require(copies.first)
        #expect(copy.words.first == built, "runtime copies \(copy.words) but the build stage writes \(built)")
        let binary = try #require(copy.words.last)

        // Runs as a fixed, non-root uid that owns the storage.
        let user = try #require(runtime.all("USER").last?.arguments)
        let uid = try #require(Int(user.split(separator: ":")[0]), "USER \(user) is not a numeric uid (Kubernetes runAsNonRoot needs one)")
        #expect(uid != 0)
        let uidArg = runtime.all("ARG").compactMap { $0.arguments.hasPrefix("COVE_UID=") ? Int($0.arguments.dropFirst("COVE_UID=".count)) : nil }.first
        #expect(uidArg == uid, "useradd's COVE_UID \(String(describing: uidArg)) vs USER \(uid)")
        let runtimeRuns = runtime.all("RUN").map(\.arguments).joined(separator: "\n")
        #expect(runtimeRuns.contains("useradd --system --uid ${COVE_UID}"), "\(runtimeRuns)")

        // Entry point, config, volume, port, health check agree with the config the image carries.
        let entry = try #require(runtime.all("ENTRYPOINT").last?.execForm, "ENTRYPOINT must be exec form (signals reach cove)")
        #expect(entry.first == binary && Array(entry.dropFirst().prefix(1)) == ["serve"], "\(entry)")
        let configIndex = try #require(entry.firstIndex(of: "--config"))
        let configInImage = entry[configIndex + 1]
        let configCopy = try #require(runtime.all("COPY").first { $0.flags["from"] == nil && $0.words.last == configInImage })
        let configSource = try #require(configCopy.words.first)
        #expect(configSource == Self.imageConfigPath)
        let config = try await checkConfig(file: repositoryRoot().appendingPathComponent(configSource).path)
        let volumes = runtime.all("VOLUME").map(\.arguments)
        #expect(volumes == [config.storage], "VOLUME \(volumes) vs storage \(config.storage)")
        #expect(runtimeRuns.contains("install -d -o cove -g cove -m 0750 \(config.storage)"), "the storage directory must belong to the cove user")
        #expect(runtime.all("EXPOSE").map(\.arguments) == [String(config.listenPort)])
        #expect(config.listenHost == "0.0.0.0", "inside a container Cove must listen on all interfaces, not \(config.listenHost)")
        let health = try #require(runtime.all("HEALTHCHECK").last)
        let probe = try #require(health.arguments.components(separatedBy: "CMD ").last.flatMap { DockerInstruction(keyword: "CMD", arguments: $0).execForm })
        #expect(probe.first == "curl" && probe.contains("-fsS"), "\(probe)")
        #expect(probe.last == "http://127.0.0.1:\(config.listenPort)/healthz", "\(probe)")
        #expect(runtime.all("STOPSIGNAL").first?.arguments == "SIGTERM")
    }

    /// The runtime stage installs packages that exist in Debian 12 and that provide what the Cove binary links
    /// beyond the Swift runtime (static) and the C/C++ libraries every Debian image has.
    @Test func runtimePackagesExistInBookwormAndCoverTheBinary() async throws {
        let df = try Self.dockerfile()
        let runtime = try #require(df.stages.last)
        let install = try #require(runtime.all("RUN").first { $0.arguments.contains("apt-get install") })
        let afterInstall = install.arguments.components(separatedBy: "apt-get install").last ?? ""
        let packages = (afterInstall.components(separatedBy: "&&").first ?? "").split(separator: " ").map(String.init).filter { !$0.hasPrefix("-") }
        #expect(Set(packages) == ["libcurl4", "libsqlite3-0", "ca-certificates", "curl"], "\(packages)")
        let release = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        guard release.contains("VERSION_CODENAME=bookworm") else {
            Issue.record("this machine is not Debian 12 (bookworm): cannot check the runtime packages against its archive")
            return
        }
        for p in packages {
            let shown = try await runCommand("apt-cache", ["show", "--no-all-versions", p], timeout: 60)
            #expect(shown.succeeded && shown.stdoutText.contains("Package: \(p)"), "\(p) is not in this machine's bookworm archive:\n\(shown.summary)")
        }
        // The libraries the binary under test needs, minus the Swift runtime and the toolchain's Foundation
        // (linked statically by --static-swift-stdlib in the image), come from those packages or from packages
        // that every Debian image has (Priority: required, or apt's own dependencies).
        let ldd = try await runCommand("ldd", [try coveBinary()], timeout: 30)
        #expect(ldd.succeeded, "\(ldd.summary)")
        let baseImage: Set<String> = ["libc6", "libgcc-s1", "libstdc++6", "zlib1g"]
        var owners: [String: String] = [:]
        for line in ldd.stdoutText.split(separator: "\n") {
            let parts = line.trimmingCharacters(in: .whitespaces).split(separator: " ")
            guard parts.count >= 3, parts[1] == "=>" else { continue }
            let lib = String(parts[0])
            let path = String(parts[2])
            if lib.hasPrefix("libswift") || lib.hasPrefix("libFoundation") || lib.hasPrefix("lib_Foundation")
                || lib.hasPrefix("libdispatch") || lib.hasPrefix("libBlocksRuntime") || lib.hasPrefix("lib_FoundationICU") || lib.hasPrefix("libTesting") || lib.hasPrefix("libXCTest") { continue }
            // Debian 12 is merged-/usr: dpkg knows the file under /usr/lib, ldd may print /lib.
            let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
            let owner = try await runCommand("dpkg", ["-S", real], timeout: 30)
            guard owner.succeeded, let pkg = owner.stdoutText.split(separator: ":").first.map(String.init) else {
                // Not from a Debian package: a toolchain library the static build links in.
                continue
            }
            owners[lib] = pkg
        }
        // Direct needs only: the runtime packages bring their own dependencies along.
        let readelf = try await runCommand("readelf", ["-d", try coveBinary()], timeout: 30)
        let needed = readelf.stdoutText.split(separator: "\n").compactMap { line -> String? in
            guard line.contains("(NEEDED)"), let a = line.firstIndex(of: "["), let b = line.firstIndex(of: "]") else { return nil }
            return String(line[line.index(after: a)..<b])
        }
        #expect(!needed.isEmpty, "readelf -d found no NEEDED entries:\n\(readelf.summary)")
        for lib in needed {
            guard let pkg = owners[lib] else { continue }
            #expect(baseImage.contains(pkg) || packages.contains(pkg), "cove needs \(lib) from \(pkg), which the runtime stage does not install")
        }
        #expect(owners["libcurl.so.4"] == "libcurl4" && owners["libsqlite3.so.0"] == "libsqlite3-0", "\(owners)")
    }

    /// What the build context must hold (manifest, sources, tests: SwiftPM checks every target's directory,
    /// the image's config) is not excluded; build output is.
    @Test func dockerignoreKeepsTheBuildInputs() throws {
        let text = try String(contentsOf: repositoryRoot().appendingPathComponent(".dockerignore"), encoding: .utf8)
        let patterns = Set(text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") })
        #expect(patterns.contains(".build/") && patterns.contains(".git/"), "\(patterns)")
        for needed in ["Package.swift", "Sources", "Tests", "deploy", Self.imageConfigPath] {
            #expect(!patterns.contains { $0 == needed || $0 == needed + "/" || needed.hasPrefix($0.hasSuffix("/") ? $0 : $0 + "/") }, "\(needed) is excluded")
        }
        let df = try Self.dockerfile()
        for stage in df.stages {
            for copy in stage.all("COPY") where copy.flags["from"] == nil {
                for source in copy.words.dropLast() where source != "." {
                    #expect(FileManager.default.fileExists(atPath: repositoryRoot().appendingPathComponent(source).path), "COPY \(source): not in the repository")
                }
            }
        }
    }

    /// compose.yml builds this Dockerfile and mounts the volume, the config and the port where the config says.
    @Test func composeFileMatchesTheImageAndItsConfig() async throws {
        let compose = "deploy/docker/compose.yml"
        let parsed = try await parseDeployFiles([compose])
        let doc = try #require((parsed[compose] as? [Any])?.first as? [String: Any])
        let cove = try #require(dig(doc, "services", "cove") as? [String: Any])
        let composeDir = repositoryRoot().appendingPathComponent("deploy/docker")

        let context = try #require(dig(cove, "build", "context") as? String)
        let dockerfile = try #require(dig(cove, "build", "dockerfile") as? String)
        let resolved = composeDir.appendingPathComponent(context).appendingPathComponent(dockerfile).standardizedFileURL.path
        #expect(resolved == repositoryRoot().appendingPathComponent(Self.dockerfilePath).standardizedFileURL.path, "compose builds \(resolved)")
        #expect(composeDir.appendingPathComponent(context).standardizedFileURL.path == repositoryRoot().standardizedFileURL.path,
                "the build context must be the repository root (the Dockerfile copies Package.swift, Sources, Tests)")

        let volumes = try #require(cove["volumes"] as? [String])
        var mounts: [String: String] = [:]  // target -> source
        for v in volumes {
            let parts = v.split(separator: ":").map(String.init)
            mounts[parts[1]] = parts[0]
        }
        let entry = try #require(Self.dockerfile().stages.last?.all("ENTRYPOINT").last?.execForm)
        let configTarget = entry[try #require(entry.firstIndex(of: "--config")) + 1]
        let configSource = try #require(mounts[configTarget], "no mount at \(configTarget): \(volumes)")
        #expect(volumes.contains("\(configSource):\(configTarget):ro"), "mount the config read-only")
        let config = try await checkConfig(file: composeDir.appendingPathComponent(configSource).path)
        let dataVolume = try #require(mounts[config.storage], "no volume at storage \(config.storage): \(volumes)")
        #expect((doc["volumes"] as? [String: Any])?.keys.contains(dataVolume) == true, "named volume \(dataVolume) not declared")

        let ports = try #require(cove["ports"] as? [String])
        #expect(ports.contains { $0.hasSuffix(":\(config.listenPort)") }, "\(ports) vs listen port \(config.listenPort)")
        let test = try #require(dig(cove, "healthcheck", "test") as? [String])
        #expect(test.first == "CMD" && test.contains("curl") && test.last == "http://127.0.0.1:\(config.listenPort)/healthz", "\(test)")
        #expect(cove["restart"] as? String == "unless-stopped")
        // Cove's shutdown deadline (shutdown_timeout) defaults to 25 s: the grace period must be longer.
        #expect(cove["stop_grace_period"] as? String == "30s")
        #expect(cove["stop_signal"] as? String == "SIGTERM")
        #expect(cove["read_only"] as? Bool == true)
    }
}
