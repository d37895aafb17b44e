import Foundation

/// A content descriptor (OCI image spec "Descriptors"): what a manifest says about one referenced object.
public struct Descriptor: Sendable, Hashable {
    public var mediaType: String?
    public var digest: Digest
    /// Size in bytes.
    public var size: Int64
    /// `os/architecture[/variant]` for entries of an image index, if given.
    public var platform: String?
}

/// The parts of a manifest Cove needs: its media type and the descriptors it references.
///
/// Parsing is deliberately lenient about fields Cove does not use; it never re-serialises, because manifests are
/// served byte-exact.
public struct ManifestSummary: Sendable {
    /// `mediaType` from the JSON body, if present (schema2 and OCI documents carry it; OCI makes it optional).
    public var mediaType: String?
    /// Child manifests of an image index / manifest list.
    public var manifests: [Descriptor]
    /// Config then layers of an image manifest.
    public var blobs: [Descriptor]

    /// Parses a manifest body.
    /// - Throws: `MANIFEST_INVALID` when the body is not a JSON object or a descriptor is malformed.
    public init(parsing body: [UInt8]) throws(DistributionError) {
        let object: [String: Any]
        do {
            guard let o = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                throw DistributionError.manifestInvalid("manifest is not a JSON object")
            }
            object = o
        } catch let e as DistributionError {
            throw e
        } catch {
            throw .manifestInvalid("manifest is not valid JSON")
        }
        mediaType = object["mediaType"] as? String
        manifests = try Self.descriptors(object["manifests"])
        var blobs: [Descriptor] = []
        if let config = object["config"] { blobs += try Self.descriptors([config]) }
        blobs += try Self.descriptors(object["layers"])
        self.blobs = blobs
    }

    /// The media type to serve a manifest with: the upstream's `Content-Type` when it names a manifest type,
    /// else the body's `mediaType`, else inferred from the shape (`manifests` → OCI index, else OCI manifest).
    /// Source: OCI distribution spec, "Pulling manifests" (the Content-Type must match the manifest's type).
    public func servedMediaType(upstreamContentType: String?) -> String {
        if let ct = upstreamContentType?.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespaces) }),
           MediaType.manifestAccept.contains(ct) {
            return ct
        }
        if let mediaType, !mediaType.isEmpty { return mediaType }
        return manifests.isEmpty ? MediaType.ociManifest : MediaType.ociIndex
    }

    private static func descriptors(_ value: Any?) throws(DistributionError) -> [Descriptor] {
        guard let value else { return [] }
        guard let array = value as? [Any] else { throw .manifestInvalid("descriptor list is not an array") }
        var out: [Descriptor] = []
        for item in array {
            guard let d = item as? [String: Any], let digestString = d["digest"] as? String,
                  let size = (d["size"] as? NSNumber)?.int64Value
            else { throw .manifestInvalid("descriptor lacks digest or size") }
            var platform: String?
            if let p = d["platform"] as? [String: Any], let os = p["os"] as? String, let arch = p["architecture"] as? String {
                platform = "\(os)/\(arch)" + ((p["variant"] as? String).map { "/" + $0 } ?? "")
            }
            out.append(Descriptor(mediaType: d["mediaType"] as? String, digest: try Digest(digestString), size: size, platform: platform))
        }
        return out
    }
}
