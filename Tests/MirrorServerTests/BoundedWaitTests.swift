import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Bounded waits (issue 7, item 5): an upstream leg that accepts the connection and never answers (token realm,
/// registry, HEAD revalidation, tag list, blob HEAD, CDN after a redirect) gives the client Cove's own answer —
/// 503 `UNAVAILABLE` naming the stalled host, or the stale cached manifest — within the operation's deadline.
/// Most tests inject a 4 s `request_timeout`; one runs with the real defaults.
@Suite("Bounded waits on stalled upstream legs", .serialized)
struct BoundedWaitTests {
    /// Long enough for the healthy legs (the in-process upstream's 401, a warm-up GET) on a loaded 2-core CI
    /// machine, where 2 s was not.
    static let requestTimeout = 4.0
    /// What a loaded CI machine adds to an answer's wall time (starting curl, scheduling the in-process servers:
    /// one curl through Cove took 6.6 s there, 0.1 s alone). Every stalled leg hangs 30 s and curl gives up after
    /// 20 s, so `requestTimeout + slack` (12 s) still fails a wait that is not bounded.
    static let slack = 8.0

    static func cove(_ up: FaultUpstream, requestTimeout: Double = requestTimeout, connectTimeout: Double = 1,
                     configuration: MirrorConfiguration = MirrorConfiguration()) async throws -> InProcessCove {
        try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [
            InProcessCove.endpoint(up.url, connectTimeout: connectTimeout, requestTimeout: requestTimeout),
        ])], configuration: configuration)
    }

    /// 503 UNAVAILABLE whose message names `host:port`.
    static func expectUnavailable(_ r: CurlResult, naming host: String, _ context: String) {
        #expect(r.status == 503 && r.errorCode == "UNAVAILABLE", "\(context): \(r.status) \(r.text)")
        #expect(r.text.contains(host), "\(context): the error should name the stalled host \(host): \(r.text)")
    }

    @Test func aTokenRealmThatNeverAnswersGivesA503NamingItInTime() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: realm) }
        up.addImage("team/app", tag: "v1")
        realm.settings.withLock { $0.hangSeconds = 30 }
        let cove = try await Self.cove(up)
        defer { cove.stop() }

        let (r, seconds) = try await timed { try await curl("\(cove.url)/v2/team/app/manifests/v1", maxTime: 20) }
        Self.expectUnavailable(r, naming: "127.0.0.1:\(realm.port)", "stalled token realm")
        #expect(seconds < Self.requestTimeout + Self.slack, "answered after \(seconds) s")
        // Asked once. A loaded realm fixture may read the request only after Cove has given up on it.
        #expect(await eventually(10) { realm.requests.withLock { $0.count } >= 1 })
        #expect(realm.requests.withLock { $0.count } == 1)
    }

    /// The registry leg that hangs, and the request that meets it.
    enum StalledLeg: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case manifestGET, tagList
        var testDescription: String { rawValue }
        var path: String { self == .manifestGET ? "/v2/team/app/manifests/v1" : "/v2/team/app/tags/list" }
    }

    @Test(arguments: StalledLeg.allCases)
    func aRegistryLegThatNeverAnswersGivesA503NamingTheRegistry(_ leg: StalledLeg) async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("team/app", tag: "v1")
        up.pathHang.withLock { $0[leg.path] = 30 }
        let cove = try await Self.cove(up)
        defer { cove.stop() }

        let (r, seconds) = try await timed { try await curl("\(cove.url)\(leg.path)", maxTime: 20) }
        Self.expectUnavailable(r, naming: "127.0.0.1:\(up.port)", "stalled \(leg)")
        #expect(seconds < Self.requestTimeout + Self.slack, "answered after \(seconds) s")
    }

    @Test func aRevalidationHEADThatNeverAnswersServesTheStaleManifest() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        // A 20 s request timeout, so the bound below shows the quick (connect timeout) limit, not the request's.
        let cove = try await Self.cove(up, requestTimeout: 20, configuration: MirrorConfiguration(tagTTL: 0.3))
        defer { cove.stop() }
        #expect(try await curl("\(cove.url)/v2/team/app/manifests/v1").body == image.manifest)

        up.pathHang.withLock { $0["/v2/team/app/manifests/v1"] = 30 }
        try await Task.sleep(for: .milliseconds(500))
        let (r, seconds) = try await timed { try await curl("\(cove.url)/v2/team/app/manifests/v1", maxTime: 20) }
        #expect(r.status == 200 && r.body == image.manifest)
        #expect(r.headers["warning"]?.hasPrefix("110") == true && r.headers["x-cove-cache"] == "stale", "\(r.headers)")
        // The HEAD is bounded by the connect timeout (1 s), not the 20 s request timeout: a cached answer is waiting.
        #expect(seconds < 1 + Self.slack, "answered after \(seconds) s")
        #expect(up.count("HEAD", "/manifests/v1") == 1)
    }

    @Test func aBlobHEADThatNeverAnswersGivesA503NamingTheRegistry() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let image = up.addImage("team/app", tag: "v1")
        let path = "/v2/team/app/blobs/\(image.layerDigests[0])"
        up.pathHang.withLock { $0[path] = 30 }
        let cove = try await Self.cove(up)
        defer { cove.stop() }

        let (r, seconds) = try await timed { try await curl("\(cove.url)\(path)", method: "HEAD", maxTime: 20) }
        #expect(r.status == 503, "\(r.status)")
        #expect(seconds < Self.requestTimeout + Self.slack, "answered after \(seconds) s")
        // HEAD has no body; the same request as GET shows the message (and is bounded the same way).
        let (g, getSeconds) = try await timed { try await curl("\(cove.url)\(path)", maxTime: 20) }
        Self.expectUnavailable(g, naming: "127.0.0.1:\(up.port)", "stalled blob GET")
        #expect(getSeconds < Self.requestTimeout + Self.slack, "answered after \(getSeconds) s")
    }

    /// The registry redirects the blob GET to a CDN that accepts and never answers: the fill's wait for a
    /// response head is bounded (retries included), and the client waiting for the size gets a 503 naming the CDN.
    @Test func aCDNThatNeverAnswersAfterTheRedirectGivesA503NamingIt() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let digest = up.addBlob(FaultUpstream.randomBytes(50_000), fault: .redirectToCDN)
        up.setCDNFault(digest, .hang(seconds: 30))
        let cove = try await Self.cove(up, configuration: MirrorConfiguration(fillRetries: 3))
        defer { cove.stop() }

        let (r, seconds) = try await timed { try await curl("\(cove.url)/v2/x/blobs/\(digest)", maxTime: 20) }
        Self.expectUnavailable(r, naming: "127.0.0.1:\(up.cdnPort)", "stalled CDN")
        // libcurl checks the head deadline about once a second while idle (within the slack).
        #expect(seconds < Self.requestTimeout + Self.slack, "answered after \(seconds) s")
        #expect(up.cdnRequests.count >= 1)
        #expect(await eventually(20) { cove.tmpFiles().isEmpty })
    }

    /// With the real defaults (no injected timeouts): a stalled token realm still gets the client an answer
    /// within 15 s. Runs about 10 s.
    @Test func withTheDefaultTimeoutsAStalledTokenRealmIsAnsweredWithin15Seconds() async throws {
        let realm = try await TokenRealm.start()
        defer { realm.stop() }
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.bearer.withLock { $0 = .init(realm: realm) }
        up.addImage("team/app", tag: "v1")
        realm.settings.withLock { $0.hangSeconds = 40 }
        let cove = try await InProcessCove(registries: [RegistryConfiguration(name: "registry.test", endpoints: [UpstreamConfiguration(url: up.url)])])
        defer { cove.stop() }

        let (r, seconds) = try await timed { try await curl("\(cove.url)/v2/team/app/manifests/v1", maxTime: 30) }
        Self.expectUnavailable(r, naming: "127.0.0.1:\(realm.port)", "stalled token realm, default timeouts")
        #expect(seconds < 15, "answered after \(seconds) s")
    }
}
