import Foundation
import Testing
@testable import Upstream

@Suite("WWW-Authenticate parsing and URL rules")
struct AuthChallengeTests {
    @Test func dockerHubBearerChallenge() {
        let c = AuthChallenge.parse(#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#)
        #expect(c.count == 1)
        #expect(c[0].scheme == "bearer")
        #expect(c[0].realm == "https://auth.docker.io/token")
        #expect(c[0].service == "registry.docker.io")
        #expect(c[0].scope == "repository:library/busybox:pull")
    }

    @Test func severalScopesAndSpacing() {
        let c = AuthChallenge.parse(#"Bearer  realm = "https://r.example/t" , service="s", scope="repository:a:pull repository:b:pull""#)
        #expect(c.first?.scope?.split(separator: " ").count == 2)
        #expect(c.first?.realm == "https://r.example/t")
    }

    @Test func basicAndMultipleChallengesAndEscapes() {
        let c = AuthChallenge.parse(#"Basic realm="basic-realm", Bearer realm="https://x/t\"q",service=svc"#)
        #expect(c.map(\.scheme) == ["basic", "bearer"])
        #expect(c[0].realm == "basic-realm")
        #expect(c[1].realm == #"https://x/t"q"#)
        #expect(c[1].service == "svc")
    }

    @Test func malformedInputDoesNotCrash() {
        for header in ["", "Bearer", "Bearer realm=", #"Bearer realm="unterminated"#, ",,,", "=x", "Bearer ,,realm=\"a\""] {
            _ = AuthChallenge.parse(header)
        }
        #expect(AuthChallenge.parse("Bearer").first?.parameters.isEmpty == true)
    }

    @Test func tokenResponseParsing() {
        let a = TokenCache.parseResponse(Array(#"{"token":"abc","expires_in":300}"#.utf8))
        #expect(a?.token == "abc" && a?.expiresIn == 300)
        let b = TokenCache.parseResponse(Array(#"{"access_token":"xyz"}"#.utf8))
        #expect(b?.token == "xyz" && b?.expiresIn == 60)  // Docker token spec default
        #expect(TokenCache.parseResponse(Array(#"{"token":""}"#.utf8)) == nil)
        #expect(TokenCache.parseResponse(Array("garbage".utf8)) == nil)
    }

    @Test func tokenCacheExpires() {
        let cache = TokenCache()
        let key = TokenCache.Key(realm: "r", service: "s", scope: "repository:a:pull")
        let t0 = ContinuousClock.now
        cache.store("tok", for: key, expiresIn: 60, now: t0)
        #expect(cache.token(for: key, now: t0 + .seconds(50)) == "tok")
        #expect(cache.token(for: key, now: t0 + .seconds(55)) == nil)  // 10% margin: gone before it expires
    }

    @Test func originsAndRedirectResolution() {
        let a = URLParts("https://registry-1.docker.io/v2/x")!
        #expect(a.sameOrigin(URLParts("https://registry-1.docker.io:443/other")!))
        #expect(!a.sameOrigin(URLParts("https://production.cloudflare.docker.com/x")!))
        #expect(!a.sameOrigin(URLParts("http://registry-1.docker.io/x")!))
        #expect(URLParts.resolve("/v2/b", against: "http://127.0.0.1:5000/v2/a") == "http://127.0.0.1:5000/v2/b")
        #expect(URLParts.resolve("//cdn.example/x", against: "https://r.example/v2/a") == "https://cdn.example/x")
        #expect(URLParts("ftp://x/y") == nil)
        #expect(URLParts("http://[::1]:8080/v2/")?.port == 8080)
        #expect(Credentials(username: "u", password: "secret").description.contains("secret") == false)
        #expect(Credentials(username: "Aladdin", password: "open sesame").basicAuthorization == "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    }

    @Test func dockerHubLibraryPrefixDefault() {
        #expect(RegistryConfiguration(name: "docker.io", endpoints: []).libraryPrefix)
        #expect(RegistryConfiguration(name: "mirror.local", endpoints: [UpstreamConfiguration(url: "https://registry-1.docker.io")]).libraryPrefix)
        #expect(!RegistryConfiguration(name: "127.0.0.1:5000", endpoints: [UpstreamConfiguration(url: "http://127.0.0.1:5000")]).libraryPrefix)
        #expect(UpstreamConfiguration(url: "http://127.0.0.1:5000/").url == "http://127.0.0.1:5000")
        #expect(RegistryConfiguration.name(forURL: "https://registry-1.docker.io") == "docker.io")
        #expect(RegistryConfiguration.name(forURL: "http://127.0.0.1:5000/") == "127.0.0.1:5000")
    }

    @Test func realmHostsAreLimitedToTheRegistrableDomainAndConfiguredHosts() {
        let none = RealmPolicy(extraHosts: [])
        #expect(none.allows(realmHost: "auth.docker.io", endpointHost: "registry-1.docker.io"))
        #expect(none.allows(realmHost: "dockerauth.cn-hangzhou.aliyuncs.com", endpointHost: "registry.cn-hangzhou.aliyuncs.com"))
        #expect(none.allows(realmHost: "ghcr.io", endpointHost: "ghcr.io"))
        #expect(!none.allows(realmHost: "evil.example.com", endpointHost: "registry-1.docker.io"))
        #expect(!none.allows(realmHost: "docker.io.evil.com", endpointHost: "registry-1.docker.io"))
        #expect(!none.allows(realmHost: "auth.example.com.cn", endpointHost: "registry.other.com.cn"))
        #expect(none.allows(realmHost: "auth.example.com.cn", endpointHost: "registry.example.com.cn"))
        // IP addresses have no registrable domain: only the same address, or a listed one.
        #expect(none.allows(realmHost: "127.0.0.1", endpointHost: "127.0.0.1"))
        #expect(!none.allows(realmHost: "127.0.0.2", endpointHost: "127.0.0.1"))
        let listed = RealmPolicy(extraHosts: ["127.0.0.2", "*.auth.example"])
        #expect(listed.allows(realmHost: "127.0.0.2", endpointHost: "127.0.0.1"))
        #expect(listed.allows(realmHost: "eu.auth.example", endpointHost: "registry.other"))
        #expect(!listed.allows(realmHost: "127.0.0.3", endpointHost: "127.0.0.1"))
    }

    @Test func rateLimitHeadersAndRetryAfter() {
        let head = ResponseHead(status: 200, headers: [("ratelimit-limit", "100;w=21600"), ("RateLimit-Remaining", "76;w=21600"),
                                                       ("docker-ratelimit-source", "192.0.2.1")])
        let status = RateLimitStatus(head)
        #expect(status?.limit == 100 && status?.remaining == 76 && status?.window == 21600 && status?.source == "192.0.2.1")
        #expect(RateLimitStatus(ResponseHead(status: 200, headers: [])) == nil)
        #expect(RateLimitStatus.retryAfter("120") == 120)
        let now = Date(timeIntervalSince1970: 1_445_412_480)  // Wed, 21 Oct 2015 07:28:00 GMT
        #expect(RateLimitStatus.retryAfter("Wed, 21 Oct 2015 07:28:30 GMT", now: now) == 30)
        #expect(RateLimitStatus.retryAfter("soon") == nil)
    }
}
