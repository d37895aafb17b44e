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
        #expect(UpstreamConfiguration(url: "https://registry-1.docker.io").libraryPrefix)
        #expect(!UpstreamConfiguration(url: "http://127.0.0.1:5000").libraryPrefix)
        #expect(UpstreamConfiguration(url: "http://127.0.0.1:5000/").url == "http://127.0.0.1:5000")
    }
}
