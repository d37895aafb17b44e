import Access
import Foundation
import HummingbirdBcrypt
import Logging
import MirrorServer
import OCI
import Testing
import Upstream

/// Client authentication and repository policies through Cove's real HTTP front, against an in-process upstream
/// that counts what it is asked.
@Suite("Client access control", .serialized)
struct ClientAccessTests {
    static let password = "correct horse battery"

    /// One user `alice` (bcrypt cost 4: fast tests; the cost does not change the logic).
    static func access(_ anonymous: AnonymousAccess, repositories: [String: RepositoryPolicy] = [:], logs: LogCapture? = nil) throws -> ClientAccess {
        let htpasswd = try Htpasswd.parse("alice:" + Bcrypt.hash(password, cost: 4))
        let logger = logs.map { l in Logger(label: "cove.access") { l.handler(label: $0) } } ?? Logger(label: "cove.access")
        return ClientAccess(verifier: CredentialVerifier(htpasswd: htpasswd), anonymous: anonymous, repositories: repositories, logger: logger)
    }

    static func basic(_ user: String, _ password: String) -> String {
        "Authorization: Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    static func cove(_ up: FaultUpstream, name: String = "upstream.test", access: ClientAccess, logs: LogCapture? = nil) async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: name, endpoints: [InProcessCove.endpoint(up.url)])], logs: logs, access: access)
    }

    @Test func withoutAnonymousAccessEverythingButHealthNeedsAValidUser() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        let cove = try await Self.cove(up, access: try Self.access(.none))
        defer { cove.stop() }

        let base = try await curl("\(cove.url)/v2/")
        #expect(base.status == 401 && base.errorCode == "UNAUTHORIZED", "\(base.status) \(base.text)")
        #expect(base.headers["www-authenticate"]?.hasPrefix("Basic realm=\"cove\"") == true, "\(base.headers)")
        for path in ["/v2/team/app/manifests/v1", "/v2/team/app/blobs/\(image.configDigest)", "/v2/team/app/tags/list", "/", "/metrics"] {
            let r = try await curl(cove.url + path)
            #expect(r.status == 401 && r.headers["www-authenticate"] != nil, "\(path): \(r.status)")
        }
        for path in ["/healthz", "/readyz"] {
            #expect(try await curl(cove.url + path).status == 200, "\(path) must not need credentials")
        }
        #expect(up.log.withLock { $0.requests.isEmpty }, "a refused request sends nothing upstream")

        #expect(try await curl("\(cove.url)/v2/", headers: [Self.basic("alice", Self.password)]).status == 200)
        let wrong = try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [Self.basic("alice", "guess")])
        #expect(wrong.status == 401 && wrong.errorCode == "UNAUTHORIZED")
        #expect(try await curl("\(cove.url)/v2/", headers: [Self.basic("mallory", Self.password)]).status == 401)
        #expect(try await curl("\(cove.url)/v2/", headers: ["Authorization: Bearer abc"]).status == 401)
        #expect(up.count("GET", "/manifests/") == 0)

        let m = try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [Self.basic("alice", Self.password)])
        #expect(m.status == 200 && m.body == image.manifest)
        let blob = try await curl("\(cove.url)/v2/team/app/blobs/\(image.layerDigests[0])", headers: [Self.basic("alice", Self.password), "Range: bytes=10-19"])
        #expect(blob.status == 206 && blob.body == Array(image.layers[0][10...19]))
        #expect(up.requests("GET", "/manifests/").allSatisfy { $0.authorization == nil }, "client credentials never go upstream")
    }

    @Test func manyRequestsWithTheSameCredentialsCostOneBcrypt() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("team/app", tag: "v1", layers: 3)
        let access = try Self.access(.none)
        let cove = try await Self.cove(up, access: access)
        defer { cove.stop() }
        for _ in 0..<20 {
            #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [Self.basic("alice", Self.password)]).status == 200)
        }
        #expect(access.verifier?.bcryptRuns == 1)
    }

    @Test func anonymousCachedServesTheCacheAndRefusesMisses() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let cached = up.addImage("team/app", tag: "v1", layers: 2)
        let other = up.addImage("team/other", tag: "v1")
        let cove = try await Self.cove(up, access: try Self.access(.cached))
        defer { cove.stop() }

        // Anonymous /v2/ is 200 here (docker would otherwise refuse to pull anonymously at all).
        #expect(try await curl("\(cove.url)/v2/").status == 200)
        // The status page and metrics are not pulling: they need a user in every anonymous mode.
        for path in ["/", "/metrics", "/anything"] { #expect(try await curl(cove.url + path).status == 401, "\(path)") }
        #expect(try await curl("\(cove.url)/healthz").status == 200)
        let auth = Self.basic("alice", Self.password)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [auth]).status == 200)
        for d in [cached.configDigest] + cached.layerDigests {
            #expect(try await curl("\(cove.url)/v2/team/app/blobs/\(d)", headers: [auth]).status == 200)
        }
        #expect(await eventually { cached.layerDigests.allSatisfy { cove.isCached($0.description) } })
        let before = up.log.withLock { $0.requests.count }

        let m = try await curl("\(cove.url)/v2/team/app/manifests/v1")
        #expect(m.status == 200 && m.body == cached.manifest)
        let b = try await curl("\(cove.url)/v2/team/app/blobs/\(cached.layerDigests[1])")
        #expect(b.status == 200 && b.body == cached.layers[1])
        #expect(try await curl("\(cove.url)/v2/team/app/blobs/\(cached.layerDigests[1])", method: "HEAD").status == 200)

        for path in ["/v2/team/other/manifests/v1", "/v2/team/other/manifests/\(other.digest)", "/v2/team/other/blobs/\(other.configDigest)",
                     "/v2/team/app/manifests/v2", "/v2/team/other/tags/list"] {
            let r = try await curl(cove.url + path)
            #expect(r.status == 401 && r.errorCode == "UNAUTHORIZED" && r.headers["www-authenticate"]?.hasPrefix("Basic") == true, "\(path): \(r.status) \(r.text)")
        }
        #expect(up.log.withLock { $0.requests.count } == before, "anonymous requests never reach the upstream")
        // The same miss with credentials is filled.
        #expect(try await curl("\(cove.url)/v2/team/other/manifests/v1", headers: [auth]).status == 200)
    }

    @Test func deniedRepositoriesAreRefusedBeforeCacheAndUpstream() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let allowed = up.addImage("library/busybox", tag: "latest")
        // The same bytes under a denied name: cached through the allowed one, still refused through this one.
        up.add(allowed, as: "secret/app", tag: "latest")
        let denied = up.addImage("library/evil", tag: "latest")
        let policy = RepositoryPolicy(allow: [try RepositoryPattern("library/*"), try RepositoryPattern("secret/*")],
                                      deny: [try RepositoryPattern("library/evil"), try RepositoryPattern("secret/*")])
        let cove = try await Self.cove(up, name: "docker.io", access: ClientAccess(repositories: ["docker.io": policy]))
        defer { cove.stop() }

        // `busybox` is `library/busybox` on Docker Hub: allowed.
        let pulled = try await pull(cove, "busybox", tag: "latest")
        #expect(pulled.ok)
        let before = up.log.withLock { $0.requests.count }
        for path in ["/v2/evil/manifests/latest", "/v2/library/evil/manifests/\(denied.digest)", "/v2/library/evil/blobs/\(denied.configDigest)",
                     "/v2/library/evil/tags/list", "/v2/library/evil/referrers/\(denied.digest)",
                     "/v2/secret/app/manifests/latest", "/v2/secret/app/blobs/\(allowed.layerDigests[0])", "/v2/myorg/app/manifests/latest",
                     "/v2/docker.io/library/evil/manifests/latest"] {
            for method in ["GET", "HEAD"] {
                let r = try await curl(cove.url + path, method: method)
                #expect(r.status == 403, "\(method) \(path): \(r.status)")
                if method == "GET" { #expect(r.errorCode == "DENIED", "\(path): \(r.text)") }
            }
        }
        #expect(up.log.withLock { $0.requests.count } == before, "a denied repository sends nothing upstream")
    }

    @Test func credentialsNeverReachTheLogs() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("team/app", tag: "v1")
        let logs = LogCapture()
        let cove = try await Self.cove(up, access: try Self.access(.none, logs: logs), logs: logs)
        defer { cove.stop() }
        let good = Self.basic("alice", Self.password), bad = Self.basic("alice", "hunter2-guess")
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [good]).status == 200)
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1", headers: [bad]).status == 401)
        #expect(try await curl("\(cove.url)/v2/", headers: ["Authorization: Basic !!!not-base64"]).status == 401)
        // A user name with a line break cannot forge a log line: it is logged quoted and escaped.
        #expect(try await curl("\(cove.url)/v2/", headers: [Self.basic("y\n2026-12-01 notice cove.http GET /v2/ 200", "pw")]).status == 401)
        let records = logs.all
        #expect(records.contains { $0.text.contains("authentication failed") && $0.metadata["user"] == "\"alice\"" }, "the failure is logged by user name")
        #expect(records.contains { $0.metadata["user"] == "\"y\\n2026-12-01 notice cove.http GET /v2/ 200\"" })
        #expect(!records.contains { $0.text.contains("\n2026-12-01") })
        #expect(records.contains { $0.message.hasPrefix("GET /v2/team/app/manifests/v1 200") && $0.metadata["user"] == "\"alice\"" }, "the access line names the user")
        for secret in [Self.password, "hunter2-guess", String(good.dropFirst("Authorization: Basic ".count)),
                       String(bad.dropFirst("Authorization: Basic ".count)), "not-base64", "Authorization", "authorization"] {
            #expect(!records.contains { $0.text.contains(secret) }, "\(secret) appeared in a log line")
        }
    }
}
