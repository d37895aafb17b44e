import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Tag lists and the referrers API through Cove: `Link` headers always point at Cove (whatever form the
/// upstream sent), pages add up to the whole list once, in order; known tags and cached referrers are served
/// stale when no endpoint answers; referrers are cached like tags, filtered by `artifactType`, served offline,
/// and a registry without the API gives the 404 that makes clients fall back to the `sha256-<hex>` tag schema.
@Suite("Tag lists and referrers", .serialized)
struct TagListAndReferrersTests {
    static let allTags = (1...11).map { String(format: "v%02d", $0) }

    /// A registry that pages tag lists 3 at a time with an *absolute* `Link` on a host Cove must never contact.
    static func pagingRegistry() async throws -> ScriptedUpstream {
        try await ScriptedUpstream.start { x in
            guard x.path == "/v2/team/app/tags/list" else { return .error(404, "NAME_UNKNOWN") }
            var last: String?, n = 3
            for pair in x.query.split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
                if kv.count == 2, kv[0] == "last" { last = kv[1] }
                if kv.count == 2, kv[0] == "n", let v = Int(kv[1]) { n = min(v, 3) }
            }
            let rest = allTags.filter { last == nil || $0 > last! }
            let page = Array(rest.prefix(n))
            var headers = [("Content-Type", "application/json")]
            if rest.count > n {
                headers.append(("Link", #"<https://registry.invalid/v2/team/app/tags/list?last=\#(page.last!)&n=\#(n)>; rel="next""#))
            }
            return .init(200, headers, text: #"{"name":"team/app","tags":[\#(page.map { "\"\($0)\"" }.joined(separator: ","))]}"#)
        }
    }

    /// Follows `Link`s from `start` through Cove, at most 20 pages; returns the tags in order and the links seen.
    static func follow(_ cove: InProcessCove, _ start: String) async throws -> (tags: [String], links: [String]) {
        var path: String? = start
        var tags: [String] = [], links: [String] = []
        for _ in 0..<20 {
            guard let p = path else { break }
            let r = try await curl(cove.url + p)
            #expect(r.status == 200, "\(p)")
            let o = try #require(try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any])
            tags += (o["tags"] as? [String]) ?? []
            path = nil
            if let link = r.headers["link"] {
                links.append(link)
                let open = try #require(link.firstIndex(of: "<")), close = try #require(link.firstIndex(of: ">"))
                path = String(link[link.index(after: open)..<close])
            }
        }
        return (tags, links)
    }

    @Test func absoluteUpstreamLinksArePointedAtCoveAndPagesAddUpToTheWholeList() async throws {
        let up = try await Self.pagingRegistry()
        defer { up.stop() }
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url)])])
        defer { cove.stop() }

        for (start, prefix, suffix) in [
            ("/v2/team/app/tags/list", "</v2/team/app/tags/list?", ""),
            ("/v2/team/app/tags/list?n=2", "</v2/team/app/tags/list?", ""),
            ("/v2/team/app/tags/list?ns=registry.test", "</v2/team/app/tags/list?", "ns=registry.test"),
            ("/v2/registry.test/team/app/tags/list", "</v2/registry.test/team/app/tags/list?", ""),
        ] {
            let (tags, links) = try await Self.follow(cove, start)
            #expect(tags == Self.allTags, "\(start)")
            #expect(!links.isEmpty)
            for link in links {
                #expect(link.hasPrefix(prefix) && link.hasSuffix(#">; rel="next""#), "\(link)")
                #expect(!link.contains("registry.invalid"))
                if !suffix.isEmpty { #expect(link.contains(suffix), "\(link)") }
            }
        }
        #expect(up.requests.allSatisfy { !$0.query.contains("ns=") })
    }

    @Test func knownTagsAreServedStaleWhenNoEndpointAnswers() async throws {
        let up = try await FaultUpstream.start()
        let a = up.addImage("team/app", tag: "v1"), b = up.addImage("team/app", tag: "v2")
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        #expect(try await pull(cove, "team/app", tag: "v1").ok && a.manifest.count > 0)
        #expect(try await pull(cove, "team/app", tag: "v2").ok && b.manifest.count > 0)
        let fresh = try await curl("\(cove.url)/v2/team/app/tags/list")
        #expect(fresh.status == 200 && fresh.headers["warning"] == nil)

        up.everyRequest.withLock { $0 = .status(503, retryAfter: nil) }
        let down = try await curl("\(cove.url)/v2/team/app/tags/list")
        #expect(down.status == 200)
        #expect(down.headers["warning"]?.hasPrefix("110") == true && down.headers["x-cove-cache"] == "stale")
        #expect(String(decoding: down.body, as: UTF8.self) == #"{"name":"team/app","tags":["v1","v2"]}"#)
        up.stop()
        let gone = try await curl("\(cove.url)/v2/team/app/tags/list?n=1")
        #expect(gone.status == 200 && gone.headers["warning"]?.hasPrefix("110") == true)
        #expect(gone.headers["link"] == #"</v2/team/app/tags/list?n=1&last=v1>; rel="next""#)
        // Nothing known: the upstream's failure stands.
        #expect(try await curl("\(cove.url)/v2/team/other/tags/list").status == 503)
    }

    // MARK: - Referrers

    static let subject = Digest.sha256(of: Array("subject manifest".utf8))
    static let signatureType = "application/vnd.dev.cosign.artifact.sig.v1+json"
    static let sbomType = "application/spdx+json"

    static func referrersIndex(_ types: [String]) -> [UInt8] {
        let entries = types.enumerated().map { i, t in
            #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\#(Digest.sha256(of: Array("ref\(i)".utf8)))","size":\#(400 + i),"artifactType":"\#(t)"}"#
        }
        return Array(#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\#(entries.joined(separator: ","))]}"#.utf8)
    }

    @Test func referrersAreCachedLikeATagFilteredServedStaleAndServedOffline() async throws {
        let full = Self.referrersIndex([Self.signatureType, Self.sbomType])
        let up = try await ScriptedUpstream.start { x in
            x.path == "/v2/team/app/referrers/\(Self.subject)"
                ? .init(200, [("Content-Type", MediaType.ociIndex)], full) // no filtering support upstream
                : .error(404, "MANIFEST_UNKNOWN")
        }
        defer { up.stop() }
        var cove = try await InProcessCove(upstream: up.url, configuration: MirrorConfiguration(tagTTL: 300))

        let r = try await curl("\(cove.url)/v2/team/app/referrers/\(Self.subject)")
        #expect(r.status == 200 && r.body == full)
        #expect(r.headers["content-type"] == MediaType.ociIndex && r.headers["oci-filters-applied"] == nil)
        let again = try await curl("\(cove.url)/v2/team/app/referrers/\(Self.subject)")
        #expect(again.status == 200 && again.body == full)
        #expect(up.requests(containing: "/referrers/").count == 1, "within tag_ttl the cached list is served")

        let filtered = try await curl("\(cove.url)/v2/team/app/referrers/\(Self.subject)?artifactType=\(Self.signatureType.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)")
        #expect(filtered.status == 200 && filtered.headers["oci-filters-applied"] == "artifactType")
        let o = try #require(try JSONSerialization.jsonObject(with: Data(filtered.body)) as? [String: Any])
        let manifests = try #require(o["manifests"] as? [[String: Any]])
        #expect(manifests.count == 1 && manifests[0]["artifactType"] as? String == Self.signatureType)

        // Offline, from the same storage: served without the upstream.
        cove.stop(keepStorage: true)
        let storage = cove.storage
        up.stop()
        cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                       configuration: MirrorConfiguration(tagTTL: 0, offline: true), storage: storage)
        let offline = try await curl("\(cove.url)/v2/team/app/referrers/\(Self.subject)")
        #expect(offline.status == 200 && offline.body == full)
        let unknown = try await curl("\(cove.url)/v2/team/app/referrers/\(Digest.sha256(of: [1]))")
        #expect(unknown.status == 404 && UpstreamAnswerTests.errorJSON(unknown)?.code == "MANIFEST_UNKNOWN")
        cove.stop(keepStorage: true)

        // Online with tag_ttl 0 and the upstream gone: stale.
        cove = try await InProcessCove(registries: [RegistryConfiguration(name: "upstream.test", endpoints: [InProcessCove.endpoint(up.url)])],
                                       configuration: MirrorConfiguration(tagTTL: 0), storage: storage)
        defer { cove.stop() }
        let stale = try await curl("\(cove.url)/v2/team/app/referrers/\(Self.subject)")
        #expect(stale.status == 200 && stale.body == full)
        #expect(stale.headers["warning"]?.hasPrefix("110") == true && stale.headers["x-cove-cache"] == "stale")
    }

    @Test func aRegistryWithoutTheReferrersAPIGives404AndTheTagSchemaWorks() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        // cosign's fallback: the signature is an ordinary tag named after the subject digest.
        let signature = up.addImage("team/app", tag: "sha256-\(image.digest.hex).sig")
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }

        let r = try await curl("\(cove.url)/v2/team/app/referrers/\(image.digest)")
        #expect(r.status == 404 && r.headers["content-type"] == "application/json")
        #expect(up.count("GET", "/referrers/") == 1)
        let p = try await pull(cove, "team/app", tag: "sha256-\(image.digest.hex).sig")
        #expect(p.ok && p.manifest.body == signature.manifest)
        let tags = try await curl("\(cove.url)/v2/team/app/tags/list")
        #expect(String(decoding: tags.body, as: UTF8.self).contains("sha256-\(image.digest.hex).sig"))
    }

    @Test func referrersPagesPointAtCove() async throws {
        let page1 = Self.referrersIndex([Self.signatureType]), page2 = Self.referrersIndex([Self.sbomType])
        let up = try await ScriptedUpstream.start { x in
            guard x.path == "/v2/team/app/referrers/\(Self.subject)" else { return .error(404, "MANIFEST_UNKNOWN") }
            if x.query.contains("page=2") { return .init(200, [("Content-Type", MediaType.ociIndex)], page2) }
            return .init(200, [("Content-Type", MediaType.ociIndex),
                               ("Link", #"<https://registry.invalid/v2/team/app/referrers/\#(Self.subject)?page=2>; rel="next""#)], page1)
        }
        defer { up.stop() }
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url)])])
        defer { cove.stop() }
        let first = try await curl("\(cove.url)/v2/registry.test/team/app/referrers/\(Self.subject)")
        #expect(first.status == 200 && first.body == page1)
        let link = try #require(first.headers["link"])
        #expect(link == #"</v2/registry.test/team/app/referrers/\#(Self.subject)?page=2>; rel="next""#)
        let second = try await curl(cove.url + String(link.dropFirst().prefix { $0 != ">" }))
        #expect(second.status == 200 && second.body == page2 && second.headers["link"] == nil)
    }
}
