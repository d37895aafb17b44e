import Foundation
import OCI

/// The OCI image layout (OCI image spec, "OCI Image Layout Specification", v1.0/1.1) as Cove's bundles use it:
///
/// ```
/// oci-layout                 {"imageLayoutVersion":"1.0.0"}
/// index.json                 an image index: one descriptor per image
/// blobs/<alg>/<hex>          every manifest, config and layer, named by its digest
/// ```
public enum ImageLayout {
    /// The marker file's name and the only version Cove writes and reads.
    public static let markerFile = "oci-layout"
    public static let version = "1.0.0"
    public static let markerBytes = Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8)
    public static let indexFile = "index.json"
    public static let blobsDirectory = "blobs"

    /// Annotation on an `index.json` descriptor naming the image: a tag (`1.36`) in Cove's bundles, as skopeo's
    /// `oci:DIR:REF` / `oci-archive:FILE:REF` write and look up; other tools may write a whole reference.
    public static let refNameAnnotation = "org.opencontainers.image.ref.name"
    /// Cove's annotation on an `index.json` descriptor: the full original reference as the cache keys it,
    /// `<registry>/<repository>:<tag>` or `<registry>/<repository>@<digest>`
    /// (`docker.io/library/busybox:1.36`). `cove import` registers the image under it.
    public static let coveRefAnnotation = "io.cove.image.ref"

    /// The path of a blob inside the layout: `blobs/<algorithm>/<hex>`.
    public static func blobPath(_ digest: Digest) -> String { "blobs/\(digest.algorithm.rawValue)/\(digest.hex)" }

    /// The digest a layout path names (`blobs/sha256/<hex>`, a leading `./` allowed), or nil for any other path.
    public static func digest(atPath path: String) -> Digest? {
        var p = Substring(path)
        while p.hasPrefix("./") { p = p.dropFirst(2) }
        let parts = p.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "blobs" else { return nil }
        return try? Digest("\(parts[1]):\(parts[2])")
    }
}

/// A descriptor in `index.json` (OCI image spec "Descriptors"): the fields Cove writes and reads.
public struct LayoutDescriptor: Codable, Sendable, Equatable {
    public var mediaType: String?
    /// `algorithm:hex`.
    public var digest: String
    /// Bytes.
    public var size: Int64
    public var annotations: [String: String]?

    public init(mediaType: String?, digest: String, size: Int64, annotations: [String: String]?) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
    }
}

/// `index.json`: an OCI image index whose `manifests` are the layout's images.
public struct LayoutIndex: Codable, Sendable, Equatable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [LayoutDescriptor]

    public init(manifests: [LayoutDescriptor]) {
        schemaVersion = 2
        mediaType = MediaType.ociIndex
        self.manifests = manifests
    }

    /// The JSON Cove writes: sorted keys, no escaped slashes, so equal bundles have equal bytes.
    public func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(self))
    }

    /// Parses `index.json`.
    /// - Throws: `DecodingError` when it is not an image index with a `manifests` array of descriptors.
    public static func decode(_ bytes: [UInt8]) throws -> LayoutIndex {
        try JSONDecoder().decode(LayoutIndex.self, from: Data(bytes))
    }
}
