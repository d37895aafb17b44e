import Foundation

/// Docker Image Manifest V2, Schema 1 in its signed form (`application/vnd.docker.distribution.manifest.v1+prettyjws`).
///
/// A signed schema 1 manifest is the JSON payload with a `signatures` array spliced in before its closing
/// brace (libtrust's "pretty JWS"). Its digest is computed over the payload *without* the signatures: each
/// signature's `protected` header (base64url JSON) carries `formatLength`, the number of leading bytes of the
/// document that belong to the payload, and `formatTail`, the base64url bytes that end it (normally `\n}`).
/// Source: distribution `manifest/schema1` (`SignedManifest.Canonical`) and docker/libtrust `jsonsign.go`.
public enum Schema1 {
    /// The signed payload of a pretty-JWS schema 1 manifest: `body[0..<formatLength] + formatTail`.
    ///
    /// Signatures are not verified: schema 1 keys are self-generated, so a signature proves nothing about the
    /// publisher; integrity comes from the digest, which Cove checks against the requested or announced one.
    /// - Throws: `MANIFEST_INVALID` when there is no signature, a protected header is malformed, the
    ///   signatures disagree on the format, or `formatLength` exceeds the document.
    public static func payload(of body: [UInt8]) throws(DistributionError) -> [UInt8] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let signatures = object["signatures"] as? [[String: Any]], !signatures.isEmpty else {
            throw .manifestInvalid("signed schema 1 manifest has no signatures")
        }
        var format: (length: Int, tail: [UInt8])?
        for signature in signatures {
            guard let protected = signature["protected"] as? String, let header = base64URLDecode(protected),
                  let fields = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any],
                  let length = (fields["formatLength"] as? NSNumber)?.intValue,
                  let tailText = fields["formatTail"] as? String, let tail = base64URLDecode(tailText) else {
                throw .manifestInvalid("signed schema 1 manifest has a malformed protected header")
            }
            if let format, format.length != length || format.tail != tail {
                throw .manifestInvalid("signed schema 1 manifest's signatures disagree on the payload format")
            }
            format = (length, tail)
        }
        guard let format, format.length > 0, format.length <= body.count else {
            throw .manifestInvalid("signed schema 1 manifest's formatLength is outside the document")
        }
        return Array(body[0..<format.length]) + format.tail
    }

    /// Decodes unpadded base64url (RFC 7515 §2), the encoding of JWS headers; nil when malformed.
    public static func base64URLDecode(_ text: String) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { [UInt8]($0) }
    }
}

/// The digest of a manifest as registries compute it: over the bytes as served, except for a signed schema 1
/// manifest, whose digest covers its payload without the signatures (`Schema1.payload(of:)`).
/// Source: OCI distribution spec "Content Digests"; distribution `manifest/schema1`.
public enum ManifestDigest {
    /// - Parameters:
    ///   - body: the manifest bytes as served.
    ///   - mediaType: the manifest's media type; only `MediaType.dockerSchema1Signed` changes the rule.
    /// - Returns: the digest; for a signed schema 1 document that has no usable signature block, the digest of
    ///   the bytes as served (which then matches nothing a registry announces).
    public static func of(_ body: [UInt8], mediaType: String, algorithm: Digest.Algorithm = .sha256) -> Digest {
        var hasher = DigestHasher(algorithm)
        if mediaType == MediaType.dockerSchema1Signed, let payload = try? Schema1.payload(of: body) {
            hasher.update(payload)
        } else {
            hasher.update(body)
        }
        return hasher.finalize()
    }
}
