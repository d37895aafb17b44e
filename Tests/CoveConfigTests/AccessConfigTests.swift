import Access
import CoveConfig
import Testing

@Suite("tls, auth and repositories keys")
struct AccessConfigTests {
    /// The key path of the error `yaml` gives.
    func errorKey(_ yaml: String) -> String? {
        do { _ = try CoveConfiguration.parse(yaml: yaml); return nil } catch { return error.key }
    }

    @Test func defaultsAreOpenPlainHTTP() throws {
        let c = try CoveConfiguration.parse(yaml: "")
        #expect(c.tls == nil && c.auth == nil && c.repositoryPolicies.isEmpty)
    }

    @Test func tlsNeedsBothFiles() throws {
        let c = try CoveConfiguration.parse(yaml: "tls:\n  certificate: /etc/cove/cert.pem\n  key: /etc/cove/key.pem\n")
        #expect(c.tls == TLSFiles(certificate: "/etc/cove/cert.pem", key: "/etc/cove/key.pem"))
        #expect(errorKey("tls:\n  certificate: /c.pem\n") == "tls.key")
        #expect(errorKey("tls:\n  key: /k.pem\n") == "tls.certificate")
        #expect(errorKey("tls:\n  cert: /c.pem\n  key: /k.pem\n") == "tls.cert")
        #expect(errorKey("tls: yes\n") == "tls")
    }

    @Test func authDefaultsToNoAnonymousAccess() throws {
        let c = try CoveConfiguration.parse(yaml: "auth:\n  htpasswd: /etc/cove/htpasswd\n")
        #expect(c.auth == ClientAuthConfiguration(htpasswd: "/etc/cove/htpasswd", anonymous: .none))
        for mode in AnonymousAccess.allCases {
            let m = try CoveConfiguration.parse(yaml: "auth:\n  htpasswd: /h\n  anonymous: \(mode.rawValue)\n")
            #expect(m.auth?.anonymous == mode)
        }
        #expect(errorKey("auth:\n  htpasswd: /h\n  anonymous: everyone\n") == "auth.anonymous")
        #expect(errorKey("auth:\n  anonymous: pull\n") == "auth.htpasswd")
        #expect(errorKey("auth:\n  htpasswd: /h\n  users: []\n") == "auth.users")
    }

    @Test func repositoriesPerRegistryAndForTheSingleUpstream() throws {
        let c = try CoveConfiguration.parse(yaml: """
            registries:
              index.docker.io:
                endpoints: [{url: "https://registry-1.docker.io"}]
                repositories:
                  allow: ["library/*", "myorg/*"]
                  deny: [library/evil]
              ghcr.io:
                endpoints: [{url: "https://ghcr.io"}]
            """)
        let hub = try #require(c.repositoryPolicies["docker.io"], "keyed by the canonical registry name")
        #expect(hub.allow?.map(\.text) == ["library/*", "myorg/*"] && hub.deny.map(\.text) == ["library/evil"])
        #expect(c.repositoryPolicies["ghcr.io"] == nil)
        let single = try CoveConfiguration.parse(yaml: "upstream:\n  url: http://127.0.0.1:5001\n  repositories:\n    deny: [secret/*]\n")
        #expect(single.repositoryPolicies[single.defaultRegistry]?.deny.map(\.text) == ["secret/*"])
        #expect(single.repositoryPolicies[single.defaultRegistry]?.allow == nil)
        #expect(errorKey("upstream:\n  url: https://r.example\n  repositories:\n    allow: [Bad/*]\n") == "upstream.repositories.allow[0]")
        #expect(errorKey("upstream:\n  url: https://r.example\n  repositories:\n    deny: library/*\n") == "upstream.repositories.deny")
        #expect(errorKey("upstream:\n  url: https://r.example\n  repositories:\n    only: [a]\n") == "upstream.repositories.only")
    }
}
