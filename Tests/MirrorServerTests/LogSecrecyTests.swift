import Foundation
import Logging
import Mirror
import MirrorServer
import OCI
import Testing
import Upstream

/// No credential or token reaches a log line, at any level, on a pull through a token-auth upstream with
/// basic credentials (the realm on another port, blobs redirected to a CDN), nor on a failed token fetch.
@Suite("Log secrecy")
struct LogSecrecyTests {
    static let password = "pw-Secret-4711"
    static let basic = "Basic " + Data("alice:\(password)".utf8).base64EncodedString()

    @Test func noCredentialOrTokenInAnyLogLine() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        realm.settings.withLock { $0.users = ["alice": Self.password] }
        let hub = try await FaultUpstream.start(label: "hub")
        defer { hub.stop() }
        hub.bearer.withLock { $0 = .init(realm: realm, service: "registry.docker.io") }
        let image = hub.addImage("library/busybox", tag: "latest", layers: 2, blobFault: .redirectToCDN)
        hub.setFault(image.configDigest, .redirectToCDN)
        let logs = LogCapture()
        let cove = try await InProcessCove(registries: [
            RegistryConfiguration(name: "docker.io", endpoints: [InProcessCove.endpoint(hub.url, credentials: Credentials(username: "alice", password: Self.password))]),
        ], logs: logs)
        defer { cove.stop() }

        // A client sending its own Authorization (Cove ignores it) must not get it logged either.
        let clientSecret = "Bearer client-token-0815"
        let m = try await curl("\(cove.url)/v2/busybox/manifests/latest", headers: ["Authorization: \(clientSecret)"])
        #expect(m.status == 200)
        #expect(try await pull(cove, "busybox", tag: "latest").ok)
        // A wrong password: the realm refuses, and the failure is logged without the password.
        realm.settings.withLock { $0.users = ["alice": "another"] }
        _ = try await curl("\(cove.url)/v2/busybox/manifests/other")

        let tokens = realm.issued.withLock { Array($0.keys) }
        #expect(!tokens.isEmpty)
        let records = logs.all
        #expect(records.contains { $0.message.hasPrefix("GET /v2/busybox/manifests/latest 200") })
        let secrets = [Self.password, String(Self.basic.dropFirst(6)), "client-token-0815"] + tokens
        for record in records {
            for secret in secrets {
                #expect(!record.text.contains(secret), "log line leaks a secret: \(record.text)")
            }
            #expect(!record.text.lowercased().contains("authorization:"), "log line shows a header: \(record.text)")
            #expect(!record.text.contains("Bearer "), "log line shows a bearer value: \(record.text)")
        }
    }
}
