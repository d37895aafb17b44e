import enum Crypto.P256
import Foundation
import OCI

/// Builds Docker schema 1 manifests signed the way docker/libtrust does (`jsonsign.go`, "pretty JWS"): the
/// payload is the pretty-printed manifest; a `signatures` array is spliced in before its final `\n}`; each
/// signature's `protected` header records `formatLength` and `formatTail` so the payload can be recovered;
/// the signature is ES256 (P-256, raw r‖s) over `protected + "." + base64url(payload)`.
enum Schema1Signer {
    struct Signed {
        /// The document as a registry serves it (`application/vnd.docker.distribution.manifest.v1+prettyjws`).
        var body: [UInt8]
        /// The payload without signatures: what the digest covers.
        var payload: [UInt8]
        var digest: Digest { Digest.sha256(of: payload) }
        var publicKey: P256.Signing.PublicKey
        var protectedHeader: String
        var signature: [UInt8]
    }

    static func base64URL(_ bytes: some Sequence<UInt8>) -> String {
        Data(Array(bytes)).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// A signed schema 1 manifest for `name:tag` over `layers` (blob digests, topmost first as schema 1 lists them).
    static func sign(name: String, tag: String, layers: [Digest], key: P256.Signing.PrivateKey = .init()) throws -> Signed {
        let fsLayers = layers.map { "      {\n         \"blobSum\": \"\($0)\"\n      }" }.joined(separator: ",\n")
        let history = layers.enumerated().map { i, _ in
            "      {\n         \"v1Compatibility\": \"{\\\"id\\\":\\\"\(String(repeating: String(i), count: 64))\\\",\\\"created\\\":\\\"2016-01-01T00:00:00Z\\\"}\"\n      }"
        }.joined(separator: ",\n")
        let payloadText = "{\n   \"schemaVersion\": 1,\n   \"name\": \"\(name)\",\n   \"tag\": \"\(tag)\",\n   \"architecture\": \"amd64\",\n"
            + "   \"fsLayers\": [\n\(fsLayers)\n   ],\n   \"history\": [\n\(history)\n   ]\n}"
        let payload = Array(payloadText.utf8)
        let tail = Array("\n}".utf8)
        let formatLength = payload.count - tail.count
        let protected = base64URL(Array(#"{"formatLength":\#(formatLength),"formatTail":"\#(base64URL(tail))","time":"2026-11-30T12:00:00Z"}"#.utf8))
        let signingInput = Array((protected + "." + base64URL(payload)).utf8)
        let signature = Array(try key.signature(for: signingInput).rawRepresentation)
        let raw = Array(key.publicKey.rawRepresentation)
        let jwk = #"{"crv":"P-256","kid":"COVE:TEST","kty":"EC","x":"\#(base64URL(raw[0..<32]))","y":"\#(base64URL(raw[32..<64]))"}"#
        let signatures = ",\n   \"signatures\": [\n      {\n         \"header\": {\n            \"jwk\": \(jwk),\n            \"alg\": \"ES256\"\n         },\n"
            + "         \"signature\": \"\(base64URL(signature))\",\n         \"protected\": \"\(protected)\"\n      }\n   ]"
        let body = Array(payload[0..<formatLength]) + Array(signatures.utf8) + tail
        return Signed(body: body, payload: payload, publicKey: key.publicKey, protectedHeader: protected, signature: signature)
    }

    /// Checks the ES256 signature the way a schema 1 client would (proves the fixture is a real JWS).
    static func verify(_ signed: Signed) -> Bool {
        guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signed.signature) else { return false }
        return signed.publicKey.isValidSignature(sig, for: Array((signed.protectedHeader + "." + base64URL(signed.payload)).utf8))
    }
}
