import Foundation
import Logging
import Mirror
import OCI
import Testing
import Upstream

/// The SSRF address rules end to end, on 127.0.0.0/8 and ::1 only. A configured endpoint that is "public" cannot
/// be simulated on loopback, so those tests assume the endpoint's class (`AddressPolicy.assumedEndpointClass`).
@Suite("Upstream address rules (SSRF)", .serialized)
struct SSRFTests {
    static func endpoint(_ url: String, assumed: AddressClass?) -> UpstreamConfiguration {
        var e = InProcessCove.endpoint(url)
        e.addressPolicy = AddressPolicy(assumedEndpointClass: assumed)
        return e
    }

    @Test func aPublicEndpointsRedirectToLoopbackIsRefused() async throws {
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        let bytes = FaultUpstream.randomBytes(100_000)
        let digest = hub.addBlob(bytes, fault: .redirectToCDN)
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [Self.endpoint(hub.url, assumed: .publicAddress)]),
        ], logs: logs)
        defer { cove.stop() }

        let r = try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")
        #expect(r.status == 502 && r.errorCode == "UNAVAILABLE", "\(r.status) \(r.text)")
        #expect(r.text.contains("127.0.0.1") && r.text.contains("loopback"), "\(r.text)")
        #expect(!r.text.contains("sig=") && !r.text.contains("/cdn/"), "the signed URL leaked: \(r.text)")
        #expect(hub.count("GET", "/blobs/") == 1)
        #expect(hub.cdnRequests.isEmpty)
        #expect(!cove.isCached(digest.description))
        // Deterministic and nothing was sent: no cool-down, the next request asks the endpoint again.
        #expect(cove.registry("docker.io")?.endpoints[0].coolingFor() == nil)
        let refusals = logs.all.filter { $0.level >= .error && $0.metadata["host"] == "127.0.0.1" && ($0.metadata["reason"] ?? "").contains("loopback") }
        #expect(!refusals.isEmpty, "no error log names the refused host")
        #expect(!logs.all.contains { $0.text.contains("sig=") })
        let again = try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")
        #expect(again.status == 502 && hub.count("GET", "/blobs/") == 2 && hub.cdnRequests.isEmpty)
    }

    @Test func aLoopbackEndpointsRedirectToLoopbackIsFollowed() async throws {
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        let bytes = FaultUpstream.randomBytes(100_000)
        let digest = hub.addBlob(bytes, fault: .redirectToCDN)
        // The endpoint's class is learned from the address it really connected to (127.0.0.1).
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [Self.endpoint(hub.url, assumed: nil)]),
        ])
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")
        #expect(r.status == 200 && r.body == bytes)
        #expect(hub.cdnRequests.count == 1)
    }

    @Test func aTokenRealmOnAnotherOriginMustBePublicForAPublicEndpoint() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.bearer.withLock { $0 = .init(realm: realm) }
        hub.addImage("library/busybox", tag: "latest")
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [Self.endpoint(hub.url, assumed: .publicAddress)]),
        ])
        defer { cove.stop() }
        let r = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(r.status == 502 && r.errorCode == "UNAVAILABLE", "\(r.status) \(r.text)")
        #expect(r.text.contains("loopback"), "\(r.text)")
        #expect(realm.requests.withLock { $0.isEmpty })
    }

    /// `allow_any_registry`: a registry named by `ns` or a path prefix that shows a non-public address is
    /// refused before any upstream work; a working registry listening there never sees a connection.
    @Test func adHocRegistriesOnLoopbackAreRefused() async throws {
        let hub = try await FaultUpstream.start(label: "hub"), local = try await FaultUpstream.start(label: "local")
        defer { hub.stop(); local.stop() }
        let image = local.addImage("org/app", tag: "v1")
        let open = try SwitchableEndpoint(.forward(local.port))
        defer { open.stop() }
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)]),
        ], allowAnyRegistry: true, logs: logs)
        defer { cove.stop() }

        let port = open.port
        let names = ["127.0.0.1:\(port)", "localhost:\(port)", "127.1:\(port)", "2130706433:\(port)", "registry.localhost:\(port)"]
        for name in names {
            for path in ["/v2/\(name)/org/app/manifests/v1", "/v2/org/app/manifests/v1?ns=\(name)",
                         "/v2/\(name)/org/app/blobs/\(image.configDigest)", "/v2/org/app/tags/list?ns=\(name)"] {
                let r = try await curl(cove.url + path)
                #expect(r.status == 403 && r.errorCode == "DENIED", "\(path): \(r.status) \(r.text)")
                #expect(r.text.contains(name) && r.text.contains("loopback"), "\(path): \(r.text)")
            }
            #expect(logs.all.contains { $0.level >= .notice && $0.metadata["registry"] == name }, "no log names \(name)")
            #expect(cove.registry(name) == nil)
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(open.accepted == 0)
        #expect(local.allRequests.isEmpty && hub.allRequests.isEmpty)
    }

    /// The name check alone (no request is made: `registry(named:)` only picks or creates a client), so
    /// non-loopback addresses can be named without any packet being sent.
    @Test func theRouterRefusesNonPublicLiteralsForAdHocRegistries() throws {
        let logs = LogCapture()
        let logger = Logger(label: "router") { _ in logs.handler(label: "router") }
        let router = UpstreamRouter(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint("https://registry-1.docker.io")])],
                                    defaultName: "docker.io", allowAnyRegistry: true, logger: logger)
        let refused = ["10.0.0.5", "10.0.0.5:5000", "172.16.3.4:443", "192.168.1.1", "169.254.169.254", "169.254.169.254:80",
                       "100.64.0.1", "0.0.0.0:5000", "127.0.0.1", "localhost", "LOCALHOST:5000", "0xa9.254.169.254", "2852039166:80"]
        for name in refused {
            do {
                _ = try router.registry(named: name)
                Issue.record("\(name) was not refused")
            } catch {
                #expect(error.code == .denied && error.status == 403, "\(name): \(error)")
                #expect(error.message.contains(name.lowercased()), "\(error.message)")
            }
            #expect(logs.all.contains { $0.level >= .notice && $0.metadata["registry"] == name.lowercased() }, "no log names \(name)")
        }
        for name in ["quay.io", "8.8.8.8:5000", "registry.example.com:5000"] {
            let r = try router.registry(named: name)
            #expect(r.endpoints.map(\.client.configuration.url) == ["https://\(name)"])
            #expect(r.endpoints[0].client.configuration.addressPolicy.scope == .publicOnly)
        }
        // Configured registries keep the configured rules.
        #expect(try router.registry(named: "docker.io").endpoints[0].client.configuration.addressPolicy == .configured)
    }

    /// The backstop behind the name check: an ad-hoc registry whose name resolves to loopback is refused when
    /// libcurl opens the socket (`localhost` is the one such name every machine has; the router's name check
    /// is bypassed here by asking the registry client directly).
    @Test func anAdHocRegistryResolvingToLoopbackIsRefusedAtConnect() async throws {
        let open = try SwitchableEndpoint(.hang)
        defer { open.stop() }
        var e = InProcessCove.endpoint("https://localhost:\(open.port)")
        e.addressPolicy = AddressPolicy(scope: .publicOnly)
        let client = RegistryClient(configuration: RegistryConfiguration(name: "localhost:\(open.port)", endpoints: [e]),
                                    logger: .init(label: "test"))
        let name = try RepositoryName("org/app"), reference = try Reference("v1")
        do {
            _ = try await client.manifest(name, reference, method: "GET")
            Issue.record("the request was not refused")
        } catch {
            guard case .refusedAddress(let why) = error else { Issue.record("unexpected \(error)"); return }
            #expect(why.contains("localhost") && why.contains("loopback"), "\(why)")
        }
        #expect(open.accepted == 0)
        #expect(client.endpoints[0].coolingFor() == nil)
    }
}
