import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Many upstreams on one port: `?ns=`, `/v2/<registry>/<name>` path prefixes, the default registry with
/// Docker Hub's `library/`, and refusal of registries that are not configured.
@Suite("Routing to registries", .serialized)
struct RoutingTests {
    /// docker.io (default) → `hub`, ghcr.io → `ghcr`.
    static func twoRegistries(_ hub: FaultUpstream, _ ghcr: FaultUpstream, allowAny: Bool = false, logs: LogCapture? = nil) async throws -> InProcessCove {
        try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)]),
            RegistryConfiguration(name: "ghcr.io", endpoints: [InProcessCove.endpoint(ghcr.url)]),
        ], allowAnyRegistry: allowAny, logs: logs)
    }

    @Test func defaultRegistryIsDockerHubWithLibraryForOneComponentNames() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        let busybox = hub.addImage("library/busybox", tag: "latest")
        let app = hub.addImage("team/app", tag: "v1")
        let cove = try await Self.twoRegistries(hub, ghcr)
        defer { cove.stop() }

        let p = try await pull(cove, "busybox", tag: "latest")
        #expect(p.ok)
        #expect(p.manifest.headers["docker-content-digest"] == busybox.digest.description)
        #expect(hub.requests("GET", "/manifests/").map(\.path) == ["/v2/library/busybox/manifests/latest"])
        // Blobs are asked for under the upstream's name too.
        #expect(hub.requests("GET", "/blobs/").allSatisfy { $0.path.hasPrefix("/v2/library/busybox/blobs/") })
        #expect(hub.count("GET", "/blobs/") == 2)

        // dockerd sends library/busybox itself: the same repository, so the tag is already cached.
        let explicit = try await curl("\(cove.url)/v2/library/busybox/manifests/latest")
        #expect(explicit.status == 200 && explicit.body == busybox.manifest)
        #expect(hub.count("GET", "/manifests/") == 1 && hub.count("HEAD", "/manifests/") == 0)

        // Two-component names are not prefixed.
        let q = try await pull(cove, "team/app", tag: "v1")
        #expect(q.ok && q.manifest.body == app.manifest)
        #expect(hub.requests("GET", "/manifests/").last?.path == "/v2/team/app/manifests/v1")
        #expect(ghcr.allRequests.isEmpty)
    }

    @Test func nsQueryParameterPicksTheRegistry() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        // The same repository name and tag on two registries, with different content.
        let onGhcr = ghcr.addImage("org/app", tag: "v1")
        let onHub = hub.addImage("org/app", tag: "v1")
        let tool = ghcr.addImage("tool", tag: "v1")
        let busybox = hub.addImage("library/busybox", tag: "latest")
        let cove = try await Self.twoRegistries(hub, ghcr)
        defer { cove.stop() }

        let g = try await pull(cove, "org/app", tag: "v1", query: "ns=ghcr.io")
        #expect(g.ok && g.manifest.body == onGhcr.manifest)
        #expect(ghcr.requests("GET", "/manifests/").map(\.path) == ["/v2/org/app/manifests/v1"])
        #expect(hub.allRequests.isEmpty)
        // The ns parameter is Cove's, not the upstream's.
        #expect(ghcr.allRequests.allSatisfy { $0.query == nil })

        // Without ns the default registry answers with its own content: tags are cached per registry.
        let h = try await pull(cove, "org/app", tag: "v1")
        #expect(h.ok && h.manifest.body == onHub.manifest)
        #expect(hub.requests("GET", "/manifests/").map(\.path) == ["/v2/org/app/manifests/v1"])

        // ns=docker.io and its aliases mean Docker Hub, with library/ for one-component names.
        let d = try await pull(cove, "busybox", tag: "latest", query: "ns=docker.io")
        #expect(d.ok && d.manifest.body == busybox.manifest)
        #expect(hub.requests("GET", "/manifests/").last?.path == "/v2/library/busybox/manifests/latest")
        let alias = try await curl("\(cove.url)/v2/busybox/manifests/latest?ns=index.docker.io")
        #expect(alias.status == 200 && alias.body == busybox.manifest)
        #expect(hub.count("GET", "/manifests/") == 2)

        // Other registries get one-component names as they are.
        let t = try await pull(cove, "tool", tag: "v1", query: "ns=ghcr.io")
        #expect(t.ok && t.manifest.body == tool.manifest)
        #expect(ghcr.requests("GET", "/manifests/").last?.path == "/v2/tool/manifests/v1")
    }

    @Test func pathPrefixPicksTheRegistryAndWinsOverNs() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        let onGhcr = ghcr.addImage("org/app", tag: "v1")
        let onHub = hub.addImage("org/app", tag: "v1")
        let busybox = hub.addImage("library/busybox", tag: "latest")
        let cove = try await Self.twoRegistries(hub, ghcr)
        defer { cove.stop() }

        let g = try await pull(cove, "ghcr.io/org/app", tag: "v1")
        #expect(g.ok && g.manifest.body == onGhcr.manifest)
        #expect(ghcr.requests("GET", "/manifests/").map(\.path) == ["/v2/org/app/manifests/v1"])
        #expect(ghcr.requests("GET", "/blobs/").allSatisfy { $0.path.hasPrefix("/v2/org/app/blobs/") })
        #expect(hub.allRequests.isEmpty)

        // The prefix names the registry even when ns says otherwise.
        let both = try await curl("\(cove.url)/v2/ghcr.io/org/app/manifests/v1?ns=docker.io")
        #expect(both.status == 200 && both.body == onGhcr.manifest)
        // ns=ghcr.io and the ghcr.io/ prefix are the same registry: a cache hit.
        let viaNs = try await curl("\(cove.url)/v2/org/app/manifests/v1?ns=ghcr.io")
        #expect(viaNs.status == 200 && viaNs.body == onGhcr.manifest)
        #expect(ghcr.count("GET", "/manifests/") == 1)
        #expect(hub.allRequests.isEmpty)

        let d = try await pull(cove, "docker.io/busybox", tag: "latest")
        #expect(d.ok && d.manifest.body == busybox.manifest)
        #expect(hub.requests("GET", "/manifests/").map(\.path) == ["/v2/library/busybox/manifests/latest"])
        let h = try await curl("\(cove.url)/v2/docker.io/org/app/manifests/v1")
        #expect(h.status == 200 && h.body == onHub.manifest)
    }

    @Test func aRegistryNamedByHostAndPort() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), local = try await FaultUpstream.start(label: "local")
        defer { hub.stop(); local.stop() }
        let image = local.addImage("app", tag: "v1")
        let name = "127.0.0.1:\(local.port)"
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)]),
            RegistryConfiguration(name: name, endpoints: [InProcessCove.endpoint(local.url)]),
        ])
        defer { cove.stop() }
        let p = try await pull(cove, "\(name)/app", tag: "v1")
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(local.requests("GET", "/manifests/").map(\.path) == ["/v2/app/manifests/v1"])
        let viaNs = try await curl("\(cove.url)/v2/app/manifests/v1?ns=\(name)")
        #expect(viaNs.status == 200 && viaNs.body == image.manifest)
        #expect(local.count("GET", "/manifests/") == 1)
        #expect(hub.allRequests.isEmpty)
    }

    @Test func unconfiguredRegistriesAreRefused() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        let image = ghcr.addImage("org/app", tag: "v1")
        // A working registry on loopback that is simply not configured: Cove must not relay to it.
        let open = try SwitchableEndpoint(.forward(ghcr.port))
        defer { open.stop() }
        let logs = LogCapture()
        let cove = try await Self.twoRegistries(hub, ghcr, logs: logs)
        defer { cove.stop() }

        let unconfigured = "127.0.0.1:\(open.port)"
        let urls = [
            "/v2/quay.io/org/app/manifests/v1",
            "/v2/org/app/manifests/v1?ns=quay.io",
            "/v2/quay.io/org/app/blobs/\(image.configDigest)",
            "/v2/org/app/blobs/\(image.configDigest)?ns=quay.io",
            "/v2/quay.io/org/app/tags/list",
            "/v2/\(unconfigured)/org/app/manifests/v1",
            "/v2/org/app/manifests/v1?ns=\(unconfigured)",
        ]
        for path in urls {
            let r = try await curl(cove.url + path)
            #expect(r.status == 403, "\(path)")
            #expect(r.errorCode == "DENIED", "\(path)")
            #expect(r.text.contains("not configured"), "\(path): \(r.text)")
        }
        let head = try await curl("\(cove.url)/v2/quay.io/org/app/manifests/v1", method: "HEAD")
        #expect(head.status == 403)
        #expect(open.accepted == 0)
        #expect(hub.allRequests.isEmpty && ghcr.allRequests.isEmpty)
        #expect(logs.all.contains { $0.level >= .notice && $0.metadata["registry"] == "quay.io" })
        #expect(cove.registry("quay.io") == nil)
    }

    @Test func allowAnyRegistryReachesUnconfiguredHostsOverHTTPS() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        // A plain-HTTP registry: an ad-hoc registry is reached at https://<host>, so the TLS handshake fails,
        // but the attempt shows Cove did not refuse the request.
        let other = try SwitchableEndpoint(.forward(ghcr.port))
        defer { other.stop() }
        // Loopback stands in for the internet here: ad-hoc registries may only reach public addresses
        // (SSRFTests checks the refusal).
        var template = InProcessCove.endpoint("https://localhost")
        template.addressPolicy = AddressPolicy(treatedAsPublic: [.loopback])
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)]),
            RegistryConfiguration(name: "ghcr.io", endpoints: [InProcessCove.endpoint(ghcr.url)]),
        ], allowAnyRegistry: true, adHocTemplate: template)
        defer { cove.stop() }
        let host = "127.0.0.1:\(other.port)"
        let r = try await curl("\(cove.url)/v2/\(host)/org/app/manifests/v1")
        #expect(r.status == 503)
        #expect(r.errorCode == "UNAVAILABLE")
        #expect(other.accepted >= 1)
        let registry = try #require(cove.registry(host))
        #expect(registry.endpoints.map(\.client.configuration.url) == ["https://\(host)"])
        #expect(registry.name == host)
        #expect(registry.endpoints[0].client.configuration.addressPolicy.scope == .publicOnly)
        // Configured registries still route as before.
        #expect(cove.registry("ghcr.io")?.endpoints.first?.client.configuration.url == ghcr.url)
        #expect(hub.allRequests.isEmpty)
    }

    @Test func tagListsGoToTheRoutedRegistryWithoutNs() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        for tag in ["v1", "v2", "v3"] { ghcr.addImage("org/app", tag: tag) }
        for tag in ["1.36", "latest"] { hub.addImage("library/busybox", tag: tag) }
        let cove = try await Self.twoRegistries(hub, ghcr)
        defer { cove.stop() }

        let page = try await curl("\(cove.url)/v2/org/app/tags/list?ns=ghcr.io&n=2")
        #expect(page.status == 200)
        #expect(page.text == #"{"name":"org/app","tags":["v1","v2"]}"#)
        #expect(ghcr.requests("GET", "/tags/list").map(\.query) == ["n=2"])
        // The Link, followed as it is, gives the next page of the same registry.
        let link = try #require(page.headers["link"])
        #expect(link.hasPrefix("</v2/org/app/tags/list?") && link.hasSuffix(#">; rel="next""#))
        let target = String(link.dropFirst().prefix { $0 != ">" })
        let next = try await curl(cove.url + target)
        #expect(next.text == #"{"name":"org/app","tags":["v3"]}"#, "following \(link)")
        #expect(ghcr.requests("GET", "/tags/list").last?.query == "n=2&last=v2")

        // Docker Hub: library/ upstream, the client's own name in the Link it gets back.
        let hubPage = try await curl("\(cove.url)/v2/busybox/tags/list?n=1")
        #expect(hubPage.status == 200)
        #expect(hub.requests("GET", "/tags/list").map(\.path) == ["/v2/library/busybox/tags/list"])
        #expect(hubPage.headers["link"] == #"</v2/busybox/tags/list?n=1&last=1.36>; rel="next""#)
        #expect(hub.allRequests.count == 1 && ghcr.requests("GET", "/tags/list").count == 2)
    }

    /// A client that addressed the registry by path prefix must be able to follow the `Link` it gets: the next
    /// page has to come from the same registry.
    @Test func tagListLinkKeepsThePathPrefixRegistry() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { hub.stop(); ghcr.stop() }
        for tag in ["v1", "v2", "v3"] { ghcr.addImage("org/app", tag: tag) }
        hub.addImage("org/app", tag: "other")
        let cove = try await Self.twoRegistries(hub, ghcr)
        defer { cove.stop() }

        let page = try await curl("\(cove.url)/v2/ghcr.io/org/app/tags/list?n=2")
        #expect(page.status == 200 && page.text.contains(#"["v1","v2"]"#))
        let link = try #require(page.headers["link"])
        let target = try #require(link.split(separator: ">").first.map { String($0.dropFirst()) })
        #expect(target.hasPrefix("/v2/ghcr.io/org/app/tags/list"), "Link \(link) leads to the default registry")
        let next = try await curl(cove.url + target)
        #expect(next.text == #"{"name":"org/app","tags":["v3"]}"#)
        #expect(hub.allRequests.isEmpty)
    }

    @Test func aDottedNamespaceIsANameWhenTheDefaultRegistryIsNotDockerHub() async throws {
        let company = try await FaultUpstream.start(label: "internal"), ghcr = try await FaultUpstream.start(label: "ghcr")
        defer { company.stop(); ghcr.stop() }
        let image = company.addImage("my.team/app", tag: "v1")
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "registry.internal", endpoints: [InProcessCove.endpoint(company.url)]),
            RegistryConfiguration(name: "ghcr.io", endpoints: [InProcessCove.endpoint(ghcr.url)]),
        ])
        defer { cove.stop() }
        // `my.team` is not a configured registry and the default is not Docker Hub: it is a namespace.
        let r = try await curl("\(cove.url)/v2/my.team/app/manifests/v1")
        #expect(r.status == 200 && r.body == image.manifest, "\(r.status) \(r.text)")
        #expect(company.count("GET", "/v2/my.team/app/manifests/v1") == 1)
        // A configured registry in the first component still routes.
        _ = ghcr.addImage("org/tool", tag: "v1")
        #expect(try await curl("\(cove.url)/v2/ghcr.io/org/tool/manifests/v1").status == 200)

        // With Docker Hub as the default, the same path names an unconfigured registry and is refused.
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        let hubCove = try await Self.twoRegistries(hub, ghcr)
        defer { hubCove.stop() }
        let refused = try await curl("\(hubCove.url)/v2/my.team/app/manifests/v1")
        #expect(refused.status == 403 && refused.errorCode == "DENIED")
        #expect(hub.allRequests.isEmpty)
    }
}
