import ArgumentParser
import BlobStore
import CacheAdmin
import CoveConfig
import Foundation
import Logging
import Mirror
import Upstream

// `cove verify`, `stats`, `ls`, `gc`, `pin`, `unpin`: maintenance commands that work whether or not `cove serve`
// runs on the same storage (AdminChannel: in this process under the storage lock, else through
// `<storage>/admin.sock`).
// Exit status: what the command says (verify: 1 when it found problems; ls REPOSITORY: 1 when nothing
// matches), 2 when it could not run at all.

/// Flags every maintenance command has.
struct AdminOutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print the answer as JSON instead of text.")
    var json = false
}

/// Runs `command` against the configured storage, prints its answer and exits with its status.
/// - Parameter creatingStorage: the command may start a new cache (`import`): a new or empty directory is
///   accepted as for `serve`; other commands need an existing Cove storage.
func runAdmin<C: AdminCommand>(_ command: C.Type, _ request: C.Request, options: ConfigOptions, output: AdminOutputOptions,
                               creatingStorage: Bool = false) async throws {
    let config = try options.load()
    let storage = URL(fileURLWithPath: config.storage)
    let response: C.Response
    do {
        response = try await AdminChannel.run(command, request, storage: storage) { storage in
            try openInProcess(config, storage: storage, creatingStorage: creatingStorage)
        }.response
    } catch let error as AdminError {
        FileHandle.standardError.write(Data("cove \(C.name): \(error)\n".utf8))
        throw ExitCode(2)
    } catch {
        FileHandle.standardError.write(Data("cove \(C.name): \(error)\n".utf8))
        throw ExitCode(2)
    }
    if output.json {
        print(String(decoding: try AdminCoding.encoder.encode(response), as: UTF8.self))
    } else {
        print(response.text)
    }
    if response.exitStatus != 0 { throw ExitCode(response.exitStatus) }
}

/// Opens the cache in this process with its configuration (limits, registries for image names), holding the
/// storage lock so no server starts meanwhile; `tmp/` is left alone so `verify` can report leftovers. With
/// nobody else using the storage, content has no grace age (the grace protects a concurrent fill's commits).
/// - Throws: `AdminError.noStorage`; `BlobStoreError.inUse` when a server holds the storage (the channel then
///   asks it through its socket).
func openInProcess(_ config: CoveConfiguration, storage: URL, creatingStorage: Bool = false) throws -> CacheAdmin {
    if creatingStorage { try Serve.checkStorage(storage) } else { try checkExistingStorage(storage) }
    var cache = config.cache
    cache.evictionGrace = 0
    var logger = Logger(label: "cove")
    logger.logLevel = .notice
    let router = UpstreamRouter(registries: config.effectiveRegistries, defaultName: config.defaultRegistry,
                                allowAnyRegistry: config.allowAnyRegistry, ignoresNamespace: config.ignoresNamespace, logger: logger)
    // Under the lock nothing else writes: a command that may start a cache (import) clears what a killed run left
    // in tmp/; the others leave it for verify to report.
    let mirror = try Mirror(storage: storage, router: router, configuration: cache, logger: logger, removingTemporaryFiles: creatingStorage)
    return CacheAdmin(mirror: mirror, reconciliation: nil, logger: logger, inServer: false)
}

/// `cove verify [--repair]`.
struct VerifyCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Re-hash every cached blob and manifest; report mismatches, missing files, orphan files and leftover temp files.",
        discussion: "Exit status 1 when anything was found (even if --repair removed it), 2 when the check could not run.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Flag(name: .long, help: "Remove what is wrong from the index and the disk (it is fetched again on demand).")
    var repair = false

    func run() async throws {
        try await runAdmin(VerifyCommand.self, .init(repair: repair), options: options, output: output)
    }
}

/// `cove stats`.
struct StatsCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Print blobs, bytes, size limit, hit ratio and evictions (the last two from a running server).")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    func run() async throws {
        try await runAdmin(StatsCommand.self, .init(), options: options, output: output)
    }
}

/// `cove ls [REPOSITORY]`.
struct ListCLI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List cached repositories, or one repository's tags and images with digests, sizes, last access and pins.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Argument(help: "A repository (library/busybox, docker.io/library/busybox, busybox); all repositories when omitted.")
    var repository: String?

    func run() async throws {
        try await runAdmin(ListCommand.self, .init(repository: repository), options: options, output: output)
    }
}
