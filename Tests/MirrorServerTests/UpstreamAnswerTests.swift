import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// What an upstream answers must be a registry's answer before it becomes content: a web server or captive
/// portal's `200 text/html` is refused (and nothing is cached), manifests are recognised by media type and
/// shape, and Docker schema 1 manifests are served byte-exact under their payload digest.
@Suite("Upstream answers and schema 1", .serialized)
struct UpstreamAnswerTests {
    static let html = ScriptedUpstream.Answer(200, [("Content-Type", "text/html; charset=utf-8")], text: "<!doctype html><html><body><form>Please log in</form></body></html>")

    static func errorJSON(_ r: CurlResult) -> (code: String, message: String)? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any],
              let e = (o["errors"] as? [[String: Any]])?.first else { return nil }
        return (e["code"] as? String ?? "", e["message"] as? String ?? "")
    }

    /// Files committed under blobs/ (there must be none after refused answers).
    static func committedFiles(_ cove: InProcessCove) -> [String] {
        let root = cove.storage.appendingPathComponent("blobs").path
        return (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? []).filter {
            var dir: ObjCBool = false
            return FileManager.default.fileExists(atPath: root + "/" + $0, isDirectory: &dir) && !dir.boolValue
        }
    }

    @Test func aWebServerAnsweringHTMLNeverBecomesAManifestOrATagList() async throws {
        let portal = try await ScriptedUpstream.start { _ in Self.html }
        defer { portal.stop() }
        let cove = try await InProcessCove(upstream: portal.url)
        defer { cove.stop() }

        for method in ["GET", "HEAD"] {
            let m = try await curl("\(cove.url)/v2/team/app/manifests/v1", method: method)
            #expect(m.status == 502, "\(method)")
            #expect(m.headers["content-type"] == "application/json")
        }
        // A request fault, not an endpoint fault: the endpoint is not cooled down for other clients.
        #expect(cove.registry("upstream.test")?.endpoints[0].coolingFor() == nil)
        let m = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        let e = try #require(Self.errorJSON(m))
        #expect(e.code == "UNAVAILABLE")
        #expect(e.message.contains("127.0.0.1:\(portal.port)") && e.message.contains("text/html"), "\(e.message)")
        // Nothing recorded: no tag, no manifest, no file.
        #expect(try cove.mirror.index.tag(registry: "upstream.test", repository: "team/app", tag: "v1") == nil)
        #expect(Self.committedFiles(cove).isEmpty)

        // By digest: the HTML does not hash to it either.
        let digest = Digest.sha256(of: Array("x".utf8))
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/\(digest)").status == 502)

        // Blobs: a page is not a blob, for HEAD and GET, and nothing is promised for a year.
        for method in ["HEAD", "GET"] {
            let b = try await curl("\(cove.url)/v2/team/app/blobs/\(digest)", method: method)
            #expect(b.status == 502, "\(method) \(b.status)")
            #expect(b.headers["cache-control"] == nil)
        }
        #expect(Self.errorJSON(try await curl("\(cove.url)/v2/team/app/blobs/\(digest)"))?.message.contains("text/html") == true)

        // Tag lists: HTML is not a tag list.
        let t = try await curl("\(cove.url)/v2/team/app/tags/list")
        #expect(t.status == 502)
        #expect(Self.errorJSON(t)?.message.contains("127.0.0.1:\(portal.port)") == true)
    }

    @Test func aBlobAskedForAsAManifestIsRefusedEvenWhenItHashesRight() async throws {
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.utf8)
        let digest = Digest.sha256(of: config)
        let up = try await ScriptedUpstream.start { x in
            x.path.hasSuffix("/manifests/\(digest)")
                ? .init(200, [("Content-Type", "application/json"), ("Docker-Content-Digest", digest.description)], config)
                : .error(404, "MANIFEST_UNKNOWN")
        }
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/manifests/\(digest)")
        #expect(r.status == 502)
        #expect(Self.errorJSON(r)?.message.contains("manifest") == true)
        #expect(Self.committedFiles(cove).isEmpty)
    }

    @Test func aManifestWithAGenericContentTypeIsRecognisedByItsShape() async throws {
        let body = Array(#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(String(repeating: "a", count: 64))","size":2},"layers":[]}"#.utf8)
        let up = try await ScriptedUpstream.start { x in
            x.path.hasSuffix("/manifests/v1") ? .init(200, [("Content-Type", "application/octet-stream")], body) : .error(404, "MANIFEST_UNKNOWN")
        }
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(r.status == 200 && r.body == body)
        #expect(r.headers["content-type"] == MediaType.ociManifest)
        #expect(r.headers["docker-content-digest"] == Digest.sha256(of: body).description)
    }

    @Test func aTokenServiceAnsweringHTMLGivesA503NamingIt() async throws {
        let realm = try await ScriptedUpstream.start { _ in Self.html }
        defer { realm.stop() }
        let realmURL = "\(realm.url)/token"
        let up = try await ScriptedUpstream.start { x in
            .init(401, [("Content-Type", "application/json"), ("WWW-Authenticate", #"Bearer realm="\#(realmURL)",service="test""#)],
                  text: #"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#)
        }
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(r.status == 503)
        let e = try #require(Self.errorJSON(r))
        #expect(e.code == "UNAVAILABLE" && e.message.contains("127.0.0.1:\(realm.port)"), "\(e.message)")
        #expect(realm.requests(containing: "/token").count >= 1)
        #expect(Self.committedFiles(cove).isEmpty)
    }

    // MARK: - Schema 1

    /// A registry serving a signed schema 1 manifest the way distribution does: `Docker-Content-Digest` is the
    /// digest of the payload without signatures, the body keeps them.
    static func schema1Registry(_ signed: Schema1Signer.Signed, layer: [UInt8], tamper: Bool = false) async throws -> ScriptedUpstream {
        let layerDigest = Digest.sha256(of: layer)
        var body = signed.body
        if tamper, let i = body.firstIndex(of: UInt8(ascii: "6")) { body[i] = UInt8(ascii: "7") } // inside the payload
        let served = body
        return try await ScriptedUpstream.start { x in
            if x.path.hasSuffix("/manifests/v1") || x.path.hasSuffix("/manifests/\(signed.digest)") {
                return .init(200, [("Content-Type", MediaType.dockerSchema1Signed), ("Docker-Content-Digest", signed.digest.description)], served)
            }
            if x.path.hasSuffix("/blobs/\(layerDigest)") {
                return .init(200, [("Content-Type", "application/octet-stream"), ("Docker-Content-Digest", layerDigest.description)], layer)
            }
            return .error(404, "MANIFEST_UNKNOWN")
        }
    }

    @Test func aSignedSchema1ManifestIsServedByteExactUnderItsPayloadDigest() async throws {
        let layer = FaultUpstream.randomBytes(5000)
        let signed = try Schema1Signer.sign(name: "team/old", tag: "v1", layers: [Digest.sha256(of: layer), Digest.sha256(of: layer)])
        #expect(Schema1Signer.verify(signed), "the fixture is a real JWS")
        #expect(Digest.sha256(of: signed.body) != signed.digest, "the digest rule matters for this document")
        #expect(try Schema1.payload(of: signed.body) == signed.payload)
        let up = try await Self.schema1Registry(signed, layer: layer)
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let byTag = try await curl("\(cove.url)/v2/team/old/manifests/v1")
        #expect(byTag.status == 200 && byTag.body == signed.body)
        #expect(byTag.headers["content-type"] == MediaType.dockerSchema1Signed)
        #expect(byTag.headers["docker-content-digest"] == signed.digest.description)
        let blob = try await curl("\(cove.url)/v2/team/old/blobs/\(Digest.sha256(of: layer))")
        #expect(blob.status == 200 && blob.body == layer)
        #expect(cove.registry("upstream.test")?.endpoints[0].coolingFor() == nil)

        // From the cache, re-verified by the schema 1 rule, with the upstream gone.
        up.stop()
        let byDigest = try await curl("\(cove.url)/v2/team/old/manifests/\(signed.digest)")
        #expect(byDigest.status == 200 && byDigest.body == signed.body)
        #expect(byDigest.headers["docker-content-digest"] == signed.digest.description)
        let head = try await curl("\(cove.url)/v2/team/old/manifests/\(signed.digest)", method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == String(signed.body.count))
    }

    @Test func aSchema1ManifestWhosePayloadWasAlteredIsRefusedAndNotCached() async throws {
        let layer = FaultUpstream.randomBytes(100)
        let signed = try Schema1Signer.sign(name: "team/old", tag: "v1", layers: [Digest.sha256(of: layer)])
        let up = try await Self.schema1Registry(signed, layer: layer, tamper: true)
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/team/old/manifests/v1")
        #expect(r.status == 502)
        #expect(Self.errorJSON(r)?.message.contains("digest") == true)
        #expect(Self.committedFiles(cove).isEmpty)
        #expect(try cove.mirror.index.tag(registry: "upstream.test", repository: "team/old", tag: "v1") == nil)
    }
}
