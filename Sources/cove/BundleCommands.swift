import ArgumentParser
import CacheAdmin
import CacheIndex
import CoveConfig
import Foundation
import Logging
import Mirror
#if canImport(Glibc)
import Glibc
#endif

// `cove export` and `cove import`: air-gap bundles (OCI image layouts in a tar archive; README "Air gap").

/// `cove export -o BUNDLE [IMAGE... | -f LIST] [--platform P]...`.
struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write cached images as an OCI image layout in a tar archive (never contacts an upstream).",
        discussion: """
            IMAGE is registry/name:tag, registry/name@digest or a short Docker Hub name, routed as serve routes requests; \
            without IMAGE and -f, every tagged image in the cache. Manifests keep their bytes and media types. With --platform, \
            an index keeps its bytes but only the named platforms' manifests are written. Reads the cache without its lock, \
            so it works beside a running cove serve. Exit status 1 when anything is not cached or cannot be written.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(name: .short, help: "The bundle to write (a tar archive); - for standard output.")
    var output: String

    @Option(name: .customShort("f"), help: "A file listing images, one per line (blank lines and # comments ignored).")
    var list: String?

    @Option(name: .long, help: "os/arch[/variant] to keep of every index (repeatable); default: every platform, all of which must be cached.")
    var platform: [String] = []

    @Argument(help: "Images to export.")
    var images: [String] = []

    func run() async throws {
        let started = ContinuousClock.now
        signal(SIGPIPE, SIG_IGN)
        let config = try options.load()
        let storage = URL(fileURLWithPath: config.storage)
        let toStdout = output == "-"
        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("cove export: \(message)\n".utf8))
            return ExitCode(1)
        }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: storage.path, isDirectory: &isDir), isDir.boolValue else {
            throw fail("storage directory \(storage.path) does not exist")
        }
        // Export only reads: a directory that is not a Cove storage must not get an index created in it.
        do { try checkExistingStorage(storage) } catch { throw fail("\(error)") }
        var names = images
        if let list {
            guard let text = try? String(contentsOfFile: list, encoding: .utf8) else { throw fail("cannot read \(list)") }
            names += text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
        }
        let plan: BundleExport.Plan
        do {
            let index = try CacheIndex(path: storage.appendingPathComponent("index.sqlite").path)
            let router = makeRouter(config)
            let refs = names.isEmpty ? try BundleExport.allTaggedImages(index: index) : try names.map { try ImageReference.parse($0, router: router) }
            guard !refs.isEmpty else { throw BundleError("the cache holds no tagged images") }
            plan = try BundleExport.plan(refs, platforms: platform, index: index, root: storage)
        } catch {
            throw fail("\(error)")
        }
        if toStdout, isatty(STDOUT_FILENO) != 0 { throw fail("refusing to write a tar archive to a terminal; redirect it or use -o FILE") }
        let fd = toStdout ? STDOUT_FILENO : open(output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(output): \(String(cString: strerror(errno)))") }
        let totals: BundleExport.Totals
        do {
            totals = try BundleExport.write(plan, root: storage, to: fd, started: started)
            if !toStdout {
                guard fsync(fd) == 0 else { throw BundleError("cannot fsync \(output): \(String(cString: strerror(errno)))") }
                close(fd)
            }
        } catch {
            if !toStdout { close(fd); unlink(output) }
            throw fail("\(error)")
        }
        var lines = plan.skippedChildren.map { "left out (--platform): \($0)" }
        lines.append(totals.text)
        let text = lines.joined(separator: "\n") + "\n"
        if toStdout { FileHandle.standardError.write(Data(text.utf8)) } else { print(text, terminator: "") }
    }
}

/// `cove import BUNDLE [--as REPOSITORY[:TAG]]`.
struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify an OCI image layout (tar or directory) and register its images in the cache, pinned.",
        discussion: """
            Accepts Cove's bundles (cove export) and layouts written by skopeo copy ... oci:DIR or oci-archive:FILE. \
            Every blob is checked against its digest and size before anything becomes visible; a bad bundle changes nothing. \
            Images carry their name in Cove's io.cove.image.ref annotation; for other layouts, --as says which repository \
            they belong to (the tag comes from org.opencontainers.image.ref.name). Works whether or not cove serve runs \
            (then the server reads BUNDLE: it must be readable by the server's user). Exit status 1 when the import failed.
            """)

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Argument(help: "A tar archive or an OCI image layout directory.")
    var bundle: String

    @Option(name: .customLong("as"), help: "registry/repository[:tag] for images without Cove's annotation (routed as serve routes requests).")
    var target: String?

    func run() async throws {
        let path = URL(fileURLWithPath: bundle).standardizedFileURL.path
        // Importing into a new storage is how an air-gapped cache starts.
        try? FileManager.default.createDirectory(atPath: try options.load().storage, withIntermediateDirectories: true)
        try await runAdmin(ImportCommand.self, .init(path: path, target: target), options: options, output: output, creatingStorage: true)
    }
}

/// The registry routing of `config`, for naming images as `serve` would.
func makeRouter(_ config: CoveConfiguration) -> UpstreamRouter {
    var logger = Logger(label: "cove")
    logger.logLevel = .critical
    return UpstreamRouter(registries: config.effectiveRegistries, defaultName: config.defaultRegistry,
                          allowAnyRegistry: config.allowAnyRegistry, ignoresNamespace: config.ignoresNamespace, logger: logger)
}
