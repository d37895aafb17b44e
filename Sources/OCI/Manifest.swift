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
/// served byte-exact. `init(validating:contentType:)` is the strict door for upstream answers: only a document
/// that is a manifest by its media type *and* its shape gets through.
public struct ManifestSummary: Sendable {
    /// `mediaType` from the JSON body, if present (schema2 and OCI documents carry it; OCI makes it optional).
    public var mediaType: String?
    /// `schemaVersion` from the JSON body (2 for schema2 and OCI, 1 for Docker schema 1), if present.
    public var schemaVersion: Int?
    /// Child manifests of an image index / manifest list.
    public var manifests: [Descriptor]
    /// Config then layers of an image manifest. For schema 1, the `fsLayers` (size -1: schema 1 carries none).
    public var blobs: [Descriptor]
    /// The fields present at the top level (to check a document's shape).
    var keys: Set<String>

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
        keys = Set(object.keys)
        mediaType = object["mediaType"] as? String
        schemaVersion = (object["schemaVersion"] as? NSNumber)?.intValue
        manifests = try Self.descriptors(object["manifests"])
        var blobs: [Descriptor] = []
        if let config = object["config"] { blobs += try Self.descriptors([config]) }
        blobs += try Self.descriptors(object["layers"])
        if schemaVersion == 1 { blobs += try Self.schema1Layers(object["fsLayers"]) }
        self.blobs = blobs
    }

    /// Parses an upstream's answer to a manifest request and checks that it is one.
    ///
    /// The media type comes from `Content-Type` when that names a manifest type, else from the body's
    /// `mediaType`; a generic or absent `Content-Type` (`application/json`, `application/octet-stream`,
    /// `text/plain`) lets the shape decide (`schemaVersion` 1 → Docker schema 1, `manifests` → OCI index,
    /// `config` → OCI image manifest; OCI image spec makes `mediaType` optional). Any other `Content-Type`
    /// (`text/html` from a web server or captive portal) is refused. The body must then have the fields of
    /// that type: `manifests` for an index or list, `config` and `layers` for an image manifest, `fsLayers`
    /// (and for the signed form a JWS `signatures` block) for schema 1.
    /// - Returns: the summary and the media type to store and serve the manifest with.
    /// - Throws: `MANIFEST_INVALID` saying what is wrong.
    public static func validating(_ body: [UInt8], contentType: String?) throws(DistributionError) -> (ManifestSummary, mediaType: String) {
        let ct = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        let headerType = MediaType.manifestAccept.contains(ct) ? ct : nil
        guard headerType != nil || MediaType.genericContentTypes.contains(ct) || ct.isEmpty else {
            throw .manifestInvalid("answered Content-Type \(RepositoryName.quoted(ct)) with \(body.count) bytes, not a manifest")
        }
        let summary: ManifestSummary
        do {
            summary = try ManifestSummary(parsing: body)
        } catch {
            throw .manifestInvalid("answered \(ct.isEmpty ? "a body" : ct) that is not a manifest: \(error.message)")
        }
        let bodyType = summary.mediaType.flatMap { MediaType.manifestAccept.contains($0) ? $0 : nil }
        let mediaType: String
        if let t = headerType ?? bodyType {
            mediaType = t
        } else if summary.schemaVersion == 1 {
            mediaType = summary.keys.contains("signatures") ? MediaType.dockerSchema1Signed : MediaType.dockerSchema1
        } else if summary.schemaVersion == 2, summary.keys.contains("manifests") {
            mediaType = MediaType.ociIndex
        } else if summary.schemaVersion == 2, summary.keys.contains("config") {
            mediaType = MediaType.ociManifest
        } else {
            throw .manifestInvalid("answered a JSON document that names no manifest media type and has no manifest's shape")
        }
        try summary.checkShape(of: mediaType, body: body)
        return (summary, mediaType)
    }

    /// Checks that the fields `mediaType` requires are present.
    func checkShape(of mediaType: String, body: [UInt8]) throws(DistributionError) {
        func require(_ key: String) throws(DistributionError) {
            guard keys.contains(key) else { throw .manifestInvalid("\(mediaType) document lacks \"\(key)\"") }
        }
        switch mediaType {
        case MediaType.ociIndex, MediaType.dockerManifestList:
            try require("manifests")
        case MediaType.ociManifest, MediaType.dockerManifest:
            try require("config")
            try require("layers")
        case MediaType.dockerSchema1, MediaType.dockerSchema1Signed:
            guard schemaVersion == 1 else { throw .manifestInvalid("\(mediaType) document does not have schemaVersion 1") }
            try require("fsLayers")
            if mediaType == MediaType.dockerSchema1Signed { _ = try Schema1.payload(of: body) }
        default:
            throw .manifestInvalid("\(mediaType) is not a manifest media type")
        }
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

    /// Schema 1 `fsLayers`: `[{"blobSum": "sha256:…"}]`, deduplicated (schema 1 repeats the empty layer).
    private static func schema1Layers(_ value: Any?) throws(DistributionError) -> [Descriptor] {
        guard let value else { return [] }
        guard let array = value as? [Any] else { throw .manifestInvalid("fsLayers is not an array") }
        var out: [Descriptor] = []
        for item in array {
            guard let d = item as? [String: Any], let sum = d["blobSum"] as? String else {
                throw .manifestInvalid("fsLayers entry lacks blobSum")
            }
            let digest = try Digest(sum)
            if !out.contains(where: { $0.digest == digest }) { out.append(Descriptor(mediaType: nil, digest: digest, size: -1, platform: nil)) }
        }
        return out
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
