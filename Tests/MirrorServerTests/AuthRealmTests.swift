import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Bearer token realms on other hosts and ports: which realms may receive credentials, scopes, token lifetimes.
@Suite("Token realms", .serialized)
struct AuthRealmTests {
    static let alice = Credentials(username: "alice", password: "s3cret-pw")
    static let aliceBasic = "Basic YWxpY2U6czNjcmV0LXB3"

    /// A Docker Hub-like upstream: registry on one port, token realm on another, blobs on a CDN port.
    static func hub(realm: TokenRealm, limit: Int? = nil) async throws -> FaultUpstream {
        let hub = try await FaultUpstream.start(label: "hub")
        hub.bearer.withLock { $0 = .init(realm: realm, service: "registry.docker.io") }
        if let limit { hub.pullLimit.withLock { $0 = .init(limit: limit) } }
        return hub
    }

    @Test func dockerHubLikePullWithARealmOnAnotherPort() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        realm.settings.withLock { $0.users = ["alice": "s3cret-pw"] }
        let hub = try await Self.hub(realm: realm, limit: 100)
        defer { hub.stop() }
        let image = hub.addImage("library/busybox", tag: "latest", layers: 2, blobFault: .redirectToCDN)
        hub.setFault(image.configDigest, .redirectToCDN)
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url, credentials: Self.alice)]),
        ])
        defer { cove.stop() }

        let p = try await pull(cove, "busybox", tag: "latest")
        #expect(p.ok && p.manifest.body == image.manifest)
        // The realm got the credentials, the service and the scope of the upstream name.
        let asks = realm.requests.withLock { $0 }
        #expect(!asks.isEmpty)
        for ask in asks {
            #expect(ask.service == "registry.docker.io")
            #expect(ask.scopes == ["repository:library/busybox:pull"])
            #expect(ask.authorization == Self.aliceBasic)
        }
        // One token served the whole pull.
        #expect(realm.issuedCount == 1)
        // The registry never saw the password, only tokens; everything it served had a valid token.
        #expect(hub.allRequests.allSatisfy { $0.authorization == nil || $0.authorization!.hasPrefix("Bearer ") })
        #expect(hub.allRequests.filter { $0.authorization != nil }.allSatisfy { $0.tokenCheck == .valid })
        #expect(hub.allRequests.filter { $0.tokenCheck != .valid }.count == 1)  // the first, unauthenticated, request
        // Blobs came from the CDN, which never saw an Authorization header.
        #expect(hub.cdnRequests.count == 3)
        #expect(hub.cdnRequests.allSatisfy { $0.authorization == nil })
        #expect(cove.registry("docker.io")?.endpoints[0].client.rateLimit?.limit == 100)
    }

    @Test func aliyunLikeRealmOnAnotherLoopbackAddressWhenListedInAuthHosts() async throws {
        let realm = try await TokenRealm.start(host: "127.0.0.2")
        defer { realm.stop() }
        realm.settings.withLock {
            $0.users = ["alice": "s3cret-pw"]
            $0.privateRepositories = ["team/private"]
        }
        let aliyun = try await FaultUpstream.start(label: "aliyun")
        defer { aliyun.stop() }
        aliyun.bearer.withLock { $0 = .init(realm: realm, service: "registry.aliyuncs.com:cn-hangzhou:26842") }
        let open = aliyun.addImage("team/public", tag: "v1")
        let closed = aliyun.addImage("team/private", tag: "v1")
        // Two registries on the same upstream: anonymous, and with credentials.
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint("http://127.0.0.1:1")]),
            RegistryConfiguration(name: "registry.cn-hangzhou.aliyuncs.com", endpoints: [InProcessCove.endpoint(aliyun.url)], authHosts: ["127.0.0.2"]),
            RegistryConfiguration(name: "registry.cn-shanghai.aliyuncs.com", endpoints: [InProcessCove.endpoint(aliyun.url, credentials: Self.alice)], authHosts: ["127.0.0.2"]),
        ])
        defer { cove.stop() }

        let p = try await pull(cove, "registry.cn-hangzhou.aliyuncs.com/team/public", tag: "v1")
        #expect(p.ok && p.manifest.body == open.manifest)
        let anonymous = realm.requests.withLock { $0 }
        #expect(!anonymous.isEmpty && anonymous.allSatisfy { $0.authorization == nil && $0.host == "127.0.0.2" })
        #expect(anonymous.allSatisfy { $0.service == "registry.aliyuncs.com:cn-hangzhou:26842" })

        // Anonymous tokens for a private repository carry no access: the registry refuses them, Cove says DENIED.
        let denied = try await curl("\(cove.url)/v2/registry.cn-hangzhou.aliyuncs.com/team/private/manifests/v1")
        #expect(denied.status == 403 && denied.errorCode == "DENIED")
        #expect(aliyun.requests("GET", "/team/private/manifests/v1").contains { $0.tokenCheck == .insufficientScope })

        // With credentials the same repository pulls, and the realm got them.
        let q = try await pull(cove, "team/private", tag: "v1", query: "ns=registry.cn-shanghai.aliyuncs.com")
        #expect(q.ok && q.manifest.body == closed.manifest)
        #expect(realm.requests.withLock { $0 }.contains { $0.authorization == Self.aliceBasic })
    }

    @Test func aRealmOnAHostTheConfigurationDoesNotAllowIsRefusedAndLogged() async throws {
        let foreign = try await TokenRealm.start(host: "127.0.0.2")
        defer { foreign.stop() }
        foreign.settings.withLock { $0.users = ["alice": "s3cret-pw"] }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: foreign, service: "evil") }
        up.addImage("team/app", tag: "v1")
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url, credentials: Self.alice)]),
        ], logs: logs)
        defer { cove.stop() }

        let r = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(r.status != 200)
        #expect(r.errorCode == "UNAVAILABLE")
        #expect(r.text.contains("auth_hosts"), "\(r.text)")
        // The realm never heard from Cove, so the credentials never left.
        #expect(foreign.requests.withLock { $0.isEmpty })
        #expect(up.allRequests.allSatisfy { $0.authorization == nil })
        let refusal = logs.all.filter { $0.level >= .error && ($0.metadata["realm"] ?? "").contains("127.0.0.2") }
        #expect(!refusal.isEmpty, "no error log names the refused realm")
        #expect(!logs.all.contains { $0.text.contains("s3cret-pw") || $0.text.contains("YWxpY2U6czNjcmV0LXB3") })
    }

    @Test func realmPolicyAllowsTheRegistrableDomainAndListedHostsOnly() {
        let none = RealmPolicy(extraHosts: [])
        #expect(none.allows(realmHost: "auth.docker.io", endpointHost: "registry-1.docker.io"))
        #expect(none.allows(realmHost: "AUTH.docker.IO", endpointHost: "registry-1.docker.io"))
        #expect(none.allows(realmHost: "dockerauth.cn-hangzhou.aliyuncs.com", endpointHost: "registry.cn-hangzhou.aliyuncs.com"))
        #expect(none.allows(realmHost: "ghcr.io", endpointHost: "ghcr.io"))
        #expect(none.allows(realmHost: "auth.example.com.cn", endpointHost: "registry.example.com.cn"))
        #expect(!none.allows(realmHost: "auth.evil.io", endpointHost: "registry-1.docker.io"))
        #expect(!none.allows(realmHost: "docker.io.evil.com", endpointHost: "registry-1.docker.io"))
        #expect(!none.allows(realmHost: "evildocker.io", endpointHost: "registry-1.docker.io"))
        #expect(!none.allows(realmHost: "other.com.cn", endpointHost: "registry.example.com.cn"))
        // Addresses are not domains: 10.1.0.1 and 10.2.0.1 share no "registrable domain".
        #expect(!none.allows(realmHost: "127.0.0.2", endpointHost: "127.0.0.1"))
        #expect(!none.allows(realmHost: "10.1.0.1", endpointHost: "10.2.0.1"))
        let listed = RealmPolicy(extraHosts: ["*.Example.com", "auth.corp.test", "127.0.0.2"])
        #expect(listed.allows(realmHost: "token.example.com", endpointHost: "registry.other.org"))
        #expect(listed.allows(realmHost: "a.b.example.com", endpointHost: "registry.other.org"))
        #expect(!listed.allows(realmHost: "example.com.evil.org", endpointHost: "registry.other.org"))
        #expect(!listed.allows(realmHost: "evilexample.com", endpointHost: "registry.other.org"))
        #expect(listed.allows(realmHost: "auth.corp.test", endpointHost: "registry.other.org"))
        #expect(!listed.allows(realmHost: "x.auth.corp.test", endpointHost: "registry.other.org"))
        #expect(listed.allows(realmHost: "127.0.0.2", endpointHost: "127.0.0.1"))
    }

    @Test func aTokenThatExpiresDuringALongPullIsRefreshedNotReused() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        // Each token must outlive the requests made with it (two, then three curls): 2 s did not on a loaded CI
        // machine, where a curl through Cove took seconds. Cove keeps a token for 90 % of it: 18 s.
        let lifetime = 20
        realm.settings.withLock { $0.expiresIn = lifetime }
        let hub = try await Self.hub(realm: realm)
        defer { hub.stop() }
        let image = hub.addImage("library/busybox", tag: "latest", layers: 3)
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)])])
        defer { cove.stop() }

        let m = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(m.status == 200 && m.body == image.manifest)
        let config = try await curl("\(cove.url)/v2/busybox/blobs/\(image.configDigest)")
        #expect(config.status == 200 && config.body == image.config)
        #expect(realm.issuedCount == 1)
        // The layers come after the first token's lifetime.
        try await Task.sleep(for: .milliseconds(lifetime * 1000 + 300))
        for (digest, bytes) in zip(image.layerDigests, image.layers) {
            let r = try await curl("\(cove.url)/v2/busybox/blobs/\(digest)")
            #expect(r.status == 200 && r.body == bytes)
        }
        #expect(realm.issuedCount == 2)
        // Cove dropped the token before it expired: the registry never received an expired one.
        #expect(!hub.allRequests.contains { $0.tokenCheck == .expired })
        let tokens = Set(hub.allRequests.compactMap(\.authorization))
        #expect(tokens.count == 2)
    }

    @Test func aTokenRefusedBeforeItsAnnouncedExpiryIsReplacedNotReused() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        // The realm says 300 s, but the registry stops accepting the token after 15 s (revoked, clock skew...): long
        // enough for the requests made with one token on a loaded CI machine (1 s was not).
        let serverLifetime = 15
        realm.settings.withLock { $0.expiresIn = 300; $0.serverLifetime = Double(serverLifetime) }
        let hub = try await Self.hub(realm: realm)
        defer { hub.stop() }
        let image = hub.addImage("library/busybox", tag: "latest", layers: 2)
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)])])
        defer { cove.stop() }

        let m = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(m.status == 200)
        try await Task.sleep(for: .milliseconds(serverLifetime * 1000 + 200))
        let first = try await curl("\(cove.url)/v2/busybox/blobs/\(image.layerDigests[0])")
        #expect(first.status == 200 && first.body == image.layers[0])
        let attempts = hub.requests("GET", "/blobs/\(image.layerDigests[0])")
        #expect(attempts.map(\.tokenCheck) == [.expired, .valid])
        #expect(attempts.count == 2 && attempts[0].authorization != attempts[1].authorization)
        #expect(realm.issuedCount == 2)
        // The fresh token is the one reused from now on.
        let second = try await curl("\(cove.url)/v2/busybox/blobs/\(image.layerDigests[1])")
        #expect(second.status == 200 && second.body == image.layers[1])
        #expect(hub.requests("GET", "/blobs/\(image.layerDigests[1])").map(\.tokenCheck) == [.valid])
        #expect(realm.issuedCount == 2)
    }

    @Test func severalScopesInOneChallengeAreRequestedAsSeparateParameters() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        // The realm URL carries its own query, and the challenge names two repositories in one scope value.
        hub.bearer.withLock {
            $0 = .init(realm: realm, realmURL: realm.url + "?account=cove", service: "registry.docker.io",
                       challengeScope: { "repository:\($0):pull repository:library/base:pull,push" })
        }
        let image = hub.addImage("library/busybox", tag: "latest")
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)])])
        defer { cove.stop() }

        let m = try await curl("\(cove.url)/v2/busybox/manifests/latest")
        #expect(m.status == 200 && m.body == image.manifest)
        let ask = try #require(realm.requests.withLock { $0.first })
        #expect(ask.scopes == ["repository:library/busybox:pull", "repository:library/base:pull,push"])
        #expect(ask.service == "registry.docker.io")
        #expect(TokenRealm.parseQuery(ask.rawQuery).first?.0 == "account")
        #expect(TokenRealm.parseQuery(ask.rawQuery).filter { $0.0 == "account" }.map(\.1) == ["cove"])
    }

    @Test func aChallengeWithoutScopeAsksForTheRepositoryBeingPulled() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.bearer.withLock { $0 = .init(realm: realm, service: "registry.docker.io", challengeScope: { _ in nil }) }
        let image = hub.addImage("library/busybox", tag: "latest")
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url)])])
        defer { cove.stop() }
        let p = try await pull(cove, "busybox", tag: "latest")
        #expect(p.ok && p.manifest.body == image.manifest)
        #expect(realm.requests.withLock { $0.first?.scopes } == ["repository:library/busybox:pull"])
    }

    /// A refused realm must not stick to the endpoint: once the upstream challenges with an allowed realm again,
    /// requests go through.
    @Test func anEndpointRecoversWhenItsChallengeNamesAnAllowedRealmAgain() async throws {
        let foreign = try await TokenRealm.start(host: "127.0.0.2")
        let good = try await TokenRealm.start()
        defer { foreign.stop(); good.stop() }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: foreign, service: "svc") }
        let image = up.addImage("team/app", tag: "v1")
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [InProcessCove.endpoint(up.url)])])
        defer { cove.stop() }
        let refused = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(refused.status != 200)
        #expect(foreign.requests.withLock { $0.isEmpty })

        up.bearer.withLock { $0 = .init(realm: good, service: "svc") }
        let before = up.allRequests.count
        let r = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(r.status == 200 && r.body == image.manifest, "\(r.status) \(r.text)")
        #expect(up.allRequests.count > before, "Cove did not even ask the upstream again")
    }
}
