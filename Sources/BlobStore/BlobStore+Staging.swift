import Foundation
import OCI
#if canImport(Glibc)
import Glibc
#endif

// Files a caller verified itself (`cove import` stages a whole bundle in `tmp/` before anything is committed).

extension BlobStore {
    /// `<root>/tmp/`: staging files there are removed when a server starts (`init(removingTemporaryFiles:)`).
    public var temporaryDirectory: URL { tmpDirectory }

    /// The path of the committed file for `digest` under the storage root `root`, without opening a store (and
    /// so without its lock): for readers beside a running server, such as `cove export`.
    public static func path(for digest: Digest, root: URL) -> String {
        root.standardizedFileURL.path + "/blobs/" + digest.algorithm.rawValue + "/" + digest.hex.prefix(2) + "/" + digest.hex
    }

    /// Moves `tmp` (a file under `temporaryDirectory` whose digest and size the caller verified, and fsynced)
    /// into place as `digest`: rename, then fsync of the directory. The index row is the caller's to write
    /// afterwards (docs/ARCHITECTURE.md, "Commit").
    /// - Throws: `BlobStoreError.io` when the directory cannot be created or the rename fails.
    public func install(verified tmp: String, as digest: Digest) throws(BlobStoreError) {
        try commit(tmp: tmp, as: digest)
    }
}
