import BlobStore
import CacheIndex
import Foundation
import Logging
import Mirror
import OCI

/// The cache as the maintenance commands see it: the store and the index, plus the running server's state
/// when the command runs inside `cove serve`.
public final class CacheAdmin: Sendable {
    public let store: BlobStore
    public let index: CacheIndex
    /// The running server's mirror (its counters; the eviction engine's entry point); nil when the command runs
    /// in the CLI process, i.e. no server holds the storage.
    public let mirror: Mirror?
    /// The running server's start-up reconciliation; nil in the CLI process.
    public let reconciliation: StartupReconciliation?
    let logger: Logger

    /// True inside a running server: other writers (fills, eviction) may change the store meanwhile.
    public let isServer: Bool
    /// Preloads started through the admin socket (server only).
    public let preloads = PreloadJobs()

    /// A view through `mirror`'s store and index: the running server's (`inServer`), or a mirror the CLI process
    /// opened under the storage lock (then nothing else writes meanwhile).
    public init(mirror: Mirror, reconciliation: StartupReconciliation?, logger: Logger, inServer: Bool = true) {
        store = mirror.store
        index = mirror.index
        self.mirror = mirror
        self.reconciliation = reconciliation
        self.logger = logger
        isServer = inServer
    }

    /// A view without a server (the CLI process holds the storage lock through `store`).
    public init(store: BlobStore, index: CacheIndex, logger: Logger) {
        self.store = store
        self.index = index
        mirror = nil
        reconciliation = nil
        self.logger = logger
        isServer = false
    }

    /// Opens the storage at `storage` for a command in this process: takes the storage lock (without clearing
    /// `tmp/`, so `verify` can report leftovers) and opens the index.
    /// - Throws: `AdminError.noStorage` when the directory does not exist; `BlobStoreError.inUse` when a
    ///   server (or another command) holds the lock; `BlobStoreError.io` or a database error otherwise.
    public static func openInProcess(storage: URL) throws -> CacheAdmin {
        try checkExistingStorage(storage)
        let store = try BlobStore(root: storage, removingTemporaryFiles: false)
        do {
            let index = try CacheIndex(path: storage.appendingPathComponent("index.sqlite").path)
            var logger = Logger(label: "cove.admin")
            logger.logLevel = .critical
            return CacheAdmin(store: store, index: index, logger: logger)
        } catch {
            store.close()
            throw error
        }
    }

    /// Releases the storage lock of an in-process view (a server's view is left alone).
    public func close() {
        guard !isServer else { return }
        if let mirror { mirror.close() } else { store.close() }
    }

    /// The configured size limit (`cache.max_size`) in bytes, nil for none or when opened without a configuration.
    var sizeLimit: Int64? { mirror?.configuration.maxSize }

    /// The mirror the eviction and pin commands need.
    /// - Throws: `AdminError.needsConfiguration` for a view opened without one.
    func requireMirror(_ command: String) throws -> Mirror {
        guard let mirror else { throw AdminError.needsConfiguration(command) }
        return mirror
    }
}

/// Checks that `storage` is a Cove storage directory before a maintenance command touches it: a typo in
/// `--storage` must not turn an unrelated directory into a cache (or let `verify --repair` empty its `tmp/`).
/// - Throws: `AdminError.noStorage` when nothing is there, `AdminError.notStorage` for a file or a directory
///   without `index.sqlite`.
public func checkExistingStorage(_ storage: URL) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: storage.path, isDirectory: &isDir) else { throw AdminError.noStorage(storage.path) }
    guard isDir.boolValue else { throw AdminError.notStorage(storage.path, "it is a file") }
    guard FileManager.default.fileExists(atPath: storage.appendingPathComponent("index.sqlite").path) else {
        throw AdminError.notStorage(storage.path, "it has no index.sqlite")
    }
}

/// Why an admin command could not run at all (as opposed to a command that ran and found problems).
public enum AdminError: Error, Sendable, CustomStringConvertible {
    /// The storage directory does not exist.
    case noStorage(String)
    /// The path exists but is not a Cove storage (a file, or a directory without `index.sqlite`).
    case notStorage(String, String)
    /// A process holds the storage but nothing answers on its admin socket (path, last error).
    case serverUnreachable(String, String)
    /// The server answered with an error (status, message; status 0: the connection broke mid-command).
    case server(Int, String)
    /// The server does not know the command (an older `cove serve`).
    case unknownCommand(String)
    /// The command needs the cache's configuration (limits, registries) and was given only a storage path.
    case needsConfiguration(String)

    public var description: String {
        switch self {
        case .noStorage(let p): "storage directory \(p) does not exist"
        case .notStorage(let p, let why): "\(p) is not a Cove storage directory (\(why)); check --storage / storage:"
        case .serverUnreachable(let p, let why):
            "the storage is in use by another process, but nothing answers on its admin socket \(p) (\(why)); is it a Cove server of another version, or still starting?"
        case .server(let status, let m): status == 0 ? m : "the server answered \(status): \(m)"
        case .unknownCommand(let c): "the running server does not know the command \(c); restart it with this version of cove"
        case .needsConfiguration(let c): "\(c) needs the cache's configuration (open it with the configuration, as the cove CLI does)"
        }
    }
}
