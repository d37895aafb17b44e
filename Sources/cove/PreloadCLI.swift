import ArgumentParser
import BlobStore
import CacheAdmin
import CoveConfig
import Foundation
import Logging
import Mirror
import MirrorServer
import Upstream
#if canImport(Glibc)
import Glibc
#endif

/// `cove preload (IMAGE... | -f LIST)`: fetch images into the cache and pin them, for an air-gapped network.
///
/// With no server on the storage, the preload runs in this process (holding the storage lock, with this
/// command's configuration). With `cove serve` running, it runs inside the server (`preload` through the admin
/// socket), sharing the server's fill engine with its clients, and this command polls `preload-status` every
/// 500 ms. Exit status: 0, 1 when any image failed, 2 when the preload could not run.
struct Preload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch images (manifests, platform manifests, configs, layers) into the cache and pin them.",
        discussion: """
            IMAGE is registry/name:tag, registry/name@digest, registry/name:tag@digest or a short Docker Hub name \
            (busybox:1.36), routed to a registry as serve routes requests. Blobs already cached are skipped; an \
            interrupted preload run again fetches only what is missing. Each image is pinned once complete. \
            With cove serve running on the storage, the preload runs inside it (its configuration applies). \
            Exit status 1 when any image failed, 2 when the preload could not run.
            """)

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Option(name: .customShort("f"), help: ArgumentHelp("A file listing images, one per line; # comments and blank lines are ignored.", valueName: "LIST"))
    var list: String?

    @Option(name: .long, help: ArgumentHelp("Take only this platform from an index, os/arch[/variant] (repeatable).", valueName: "os/arch[/variant]"))
    var platform: [String] = []

    @Flag(name: .long, help: "Take every platform of an index, attestation manifests included (the default).")
    var allPlatforms = false

    @Flag(name: .long, help: "Also fetch and pin the referrers (signatures, SBOMs) of every manifest.")
    var withReferrers = false

    @Option(name: .long, help: "Blobs fetched at once per image (1-64).")
    var parallelism = 4

    @Argument(help: "Images to preload.")
    var images: [String] = []

    func validate() throws {
        if images.isEmpty, list == nil { throw ValidationError("give images, or -f LIST") }
        if allPlatforms, !platform.isEmpty { throw ValidationError("--all-platforms and --platform exclude each other") }
        for p in platform {
            do { _ = try PlatformFilter(parsing: p) } catch { throw ValidationError("--platform: \(error)") }
        }
        guard (1...64).contains(parallelism) else { throw ValidationError("--parallelism must be 1...64") }
    }

    func run() async throws {
        let config = try options.load()
        let level = options.logLevel.flatMap { Logger.Level(rawValue: $0) } ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = LogLineHandler(label: label, format: .text)
            handler.logLevel = level
            return handler
        }
        var all = images
        if let list { all += try Self.readList(list) }
        let request = PreloadCommand.Request(images: all, options: PreloadOptions(platforms: platform, withReferrers: withReferrers, parallelism: parallelism))
        let storage = URL(fileURLWithPath: config.storage)
        let display = PreloadDisplay(live: !output.json && isatty(STDOUT_FILENO) != 0, quiet: output.json)
        let final: PreloadJobStatus
        do {
            do {
                final = try await Self.runInProcess(request, config: config, storage: storage, display: display)
            } catch BlobStoreError.inUse(_) {
                if options.upstream != nil {
                    FileHandle.standardError.write(Data("cove preload: a server runs on this storage; its configuration applies (--upstream is ignored)\n".utf8))
                }
                final = try await Self.runOnServer(request, storage: storage, display: display)
            }
        } catch let error as PreloadError {
            FileHandle.standardError.write(Data("cove preload: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("cove preload: \(error)\n".utf8))
            throw ExitCode(2)
        }
        display.finish(final, json: output.json)
        if final.exitStatus != 0 { throw ExitCode(final.exitStatus) }
    }

    /// One image per line; `#` starts a comment; blank lines are skipped. `-` reads standard input.
    static func readList(_ path: String) throws -> [String] {
        let text: String
        if path == "-" {
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            guard let t = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("cannot read image list \(path)") }
            text = t
        }
        return text.split(whereSeparator: \.isNewline).compactMap { line in
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let image = content.trimmingCharacters(in: .whitespaces)
            return image.isEmpty ? nil : image
        }
    }

    /// Runs the preload here, under the storage lock (created if missing).
    /// - Throws: `BlobStoreError.inUse` when a server holds the storage; `PreloadError`; storage errors.
    static func runInProcess(_ request: PreloadCommand.Request, config: CoveConfiguration, storage: URL,
                             display: PreloadDisplay) async throws -> PreloadJobStatus {
        try Serve.checkStorage(storage)  // new, empty or a Cove storage: never adopt an unrelated directory
        try FileManager.default.createDirectory(at: storage, withIntermediateDirectories: true)
        let logger = Logger(label: "cove.preload")
        var template = UpstreamConfiguration(url: "https://localhost")
        template.requestLimits = config.network.requestLimits
        template.blobLimits = config.network.blobLimits
        let router = UpstreamRouter(registries: config.effectiveRegistries, defaultName: config.defaultRegistry,
                                    allowAnyRegistry: config.allowAnyRegistry, ignoresNamespace: config.ignoresNamespace,
                                    adHocTemplate: template, logger: logger)
        // Holding the lock, so temp files are leftovers of a killed run: cleared. The eviction grace stays (this
        // preload's own commits are recent content while it runs).
        let mirror = try Mirror(storage: storage, router: router, configuration: config.cache, logger: logger)
        defer { mirror.close() }
        let preloader = try Preloader(mirror: mirror, images: request.images, options: request.options)
        let task = Task { await preloader.run() }
        await display.follow { preloader.progress.snapshot() }
        return PreloadJobStatus(id: "in-process", status: await task.value)
    }

    /// Starts the preload in the running server and follows it until it ends.
    static func runOnServer(_ request: PreloadCommand.Request, storage: URL, display: PreloadDisplay) async throws -> PreloadJobStatus {
        let started = try await AdminChannel.runOnServer(PreloadCommand.self, request, storage: storage)
        display.note("running in the cove server on this storage (job \(started.id))")
        var last = started
        await display.follow {
            // nil (stop following) when the server stopped answering for 5 s.
            guard let s = try? await AdminChannel.runOnServer(PreloadStatusCommand.self, .init(id: started.id), storage: storage) else { return nil }
            last = s
            return s.status
        }
        // The last answer is the final one (follow returns once it says finished), unless the server went away.
        if !last.status.finished { throw AdminError.serverUnreachable(AdminChannel.socketPath(storage: storage), "the server stopped answering during the preload") }
        return last
    }
}
