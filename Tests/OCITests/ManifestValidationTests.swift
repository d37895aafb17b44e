import OCI
import Testing

/// `ManifestSummary.validating`: which upstream answers count as manifests, and with which media type.
@Suite("Manifest validation")
struct ManifestValidationTests {
    static let d = "sha256:" + String(repeating: "1", count: 64)
    static let image = #"{"schemaVersion":2,"config":{"digest":"\#(d)","size":3},"layers":[{"digest":"\#(d)","size":4}]}"#
    static let dockerImage = #"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"\#(d)","size":3},"layers":[]}"#
    static let index = #"{"schemaVersion":2,"manifests":[{"digest":"\#(d)","size":10}]}"#
    static let schema1 = #"{"schemaVersion":1,"name":"a","tag":"v1","fsLayers":[{"blobSum":"\#(d)"},{"blobSum":"\#(d)"}],"history":[]}"#

    @Test(arguments: [
        (image, MediaType.ociManifest, MediaType.ociManifest),
        (image, "application/json", MediaType.ociManifest),
        (image, nil, MediaType.ociManifest),
        (image, "application/octet-stream", MediaType.ociManifest),
        (dockerImage, "text/plain; charset=utf-8", MediaType.dockerManifest),
        (dockerImage, MediaType.dockerManifest + "; charset=utf-8", MediaType.dockerManifest),
        (index, "application/json", MediaType.ociIndex),
        (index, MediaType.dockerManifestList, MediaType.dockerManifestList),
        (schema1, MediaType.dockerSchema1, MediaType.dockerSchema1),
        (schema1, "application/json", MediaType.dockerSchema1),
    ] as [(String, String?, String)])
    func accepted(body: String, contentType: String?, mediaType: String) throws {
        let (_, type) = try ManifestSummary.validating(Array(body.utf8), contentType: contentType)
        #expect(type == mediaType)
    }

    @Test(arguments: [
        ("<html><body>login</body></html>", "text/html", "text/html"),
        (image, "text/html; charset=utf-8", "text/html"),
        (#"{"architecture":"amd64","os":"linux"}"#, "application/json", "no manifest"),
        (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#, nil, "config"),
        (#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#, nil, "manifests"),
        (image, MediaType.ociIndex, "manifests"),
        (schema1, MediaType.dockerSchema1Signed, "signatures"),
        ("not json", "application/json", "not a manifest"),
        ("[1,2]", MediaType.ociManifest, "not a manifest"),
    ] as [(String, String?, String)])
    func refused(body: String, contentType: String?, reason: String) {
        do {
            _ = try ManifestSummary.validating(Array(body.utf8), contentType: contentType)
            Issue.record("accepted \(body) as \(contentType ?? "-")")
        } catch {
            #expect(error.code == .manifestInvalid)
            #expect(error.message.contains(reason), "\(error.message)")
        }
    }

    @Test func schema1LayersAreDeduplicatedWithUnknownSize() throws {
        let (s, _) = try ManifestSummary.validating(Array(Self.schema1.utf8), contentType: MediaType.dockerSchema1)
        #expect(s.blobs.map(\.digest.description) == [Self.d] && s.blobs[0].size == -1)
    }

    @Test func pageLinkQueriesComeFromRelativeAndAbsoluteLinks() throws {
        #expect(PageLink.nextQuery(#"</v2/a/tags/list?n=2&last=b>; rel="next""#) == "n=2&last=b")
        #expect(PageLink.nextQuery(#"<https://r.example/v2/a/tags/list?last=b&n=2>; rel=next"#) == "last=b&n=2")
        #expect(PageLink.nextQuery(#"<https://r.example/x?p=1>; rel="prev", <https://r.example/x?p=3>; rel="next""#) == "p=3")
        #expect(PageLink.nextQuery(#"<https://r.example/x>; rel="next""#) == "")
        #expect(PageLink.nextQuery(#"<https://r.example/x?p=1>; rel="prev""#) == nil)
        #expect(PageLink.nextQuery(nil) == nil)
        #expect(PageLink.next(name: try RepositoryName("a/b"), path: "tags/list", query: "n=1") == #"</v2/a/b/tags/list?n=1>; rel="next""#)
    }

    @Test func dockerHubNaming() throws {
        for alias in ["docker.io", "index.docker.io", "registry-1.docker.io", "Registry.Hub.Docker.com"] {
            #expect(DockerHub.canonicalRegistryName(alias) == "docker.io")
        }
        #expect(DockerHub.canonicalRegistryName("GHCR.io") == "ghcr.io")
        #expect(try DockerHub.officialName(RepositoryName("busybox")).value == "library/busybox")
        #expect(try DockerHub.officialName(RepositoryName("team/app")).value == "team/app")
    }
}
