import Foundation
import OCI
import Testing

@Suite("Registry JSON error envelope")
struct ErrorEnvelopeTests {
    @Test func envelopeIsValidJSONWithCodeAndMessage() throws {
        let e = DistributionError(.manifestUnknown, "manifest \"x\" with\nnewline and \\ backslash \u{1}")
        let json = try JSONSerialization.jsonObject(with: Data(e.envelope)) as? [String: Any]
        let errors = try #require(json?["errors"] as? [[String: Any]])
        #expect(errors.count == 1)
        #expect(errors[0]["code"] as? String == "MANIFEST_UNKNOWN")
        #expect(errors[0]["message"] as? String == "manifest \"x\" with\nnewline and \\ backslash \u{1}")
    }

    @Test func statusesFollowDistribution() {
        #expect(DistributionErrorCode.manifestUnknown.httpStatus == 404)
        #expect(DistributionErrorCode.blobUnknown.httpStatus == 404)
        #expect(DistributionErrorCode.nameInvalid.httpStatus == 400)
        #expect(DistributionErrorCode.digestInvalid.httpStatus == 400)
        #expect(DistributionErrorCode.unsupported.httpStatus == 405)
        #expect(DistributionErrorCode.tooManyRequests.httpStatus == 429)
        #expect(DistributionErrorCode.denied.httpStatus == 403)
    }

    @Test func manifestSummaryFindsChildrenAndMediaType() throws {
        let d1 = "sha256:" + String(repeating: "1", count: 64), d2 = "sha256:" + String(repeating: "2", count: 64)
        let index = #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(d1)","size":10,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#
        let s = try ManifestSummary(parsing: Array(index.utf8))
        #expect(s.manifests.map(\.digest.description) == [d1])
        #expect(s.manifests.first?.platform == "linux/arm64/v8")
        #expect(s.servedMediaType(upstreamContentType: "application/json") == MediaType.ociIndex)
        #expect(s.servedMediaType(upstreamContentType: MediaType.dockerManifestList) == MediaType.dockerManifestList)

        let image = #"{"schemaVersion":2,"config":{"digest":"\#(d1)","size":3},"layers":[{"digest":"\#(d2)","size":4}]}"#
        let m = try ManifestSummary(parsing: Array(image.utf8))
        #expect(m.blobs.map(\.size) == [3, 4])
        #expect(m.servedMediaType(upstreamContentType: nil) == MediaType.ociManifest)

        #expect(throws: DistributionError.self) { try ManifestSummary(parsing: Array("not json".utf8)) }
        #expect(throws: DistributionError.self) {
            try ManifestSummary(parsing: Array(#"{"layers":[{"digest":"sha256:../x","size":1}]}"#.utf8))
        }
    }
}
