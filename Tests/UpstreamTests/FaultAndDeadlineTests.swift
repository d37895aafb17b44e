import Foundation
import Logging
import Testing
@testable import Upstream

@Suite("Fault classification, deadlines and ns= for mirror endpoints")
struct FaultAndDeadlineTests {
    static func status(_ s: Int, retryAfter: String? = nil) -> UpstreamError {
        .status(ResponseHead(status: s, headers: retryAfter.map { [("Retry-After", $0)] } ?? []), body: [])
    }

    @Test func endpointLevelEvidence() {
        #expect(FaultScope.classify(.transport("x", code: 7), path: "/v2/a/manifests/v1", cooldown: 30) == .endpoint(seconds: 30, rateLimited: false))
        #expect(FaultScope.classify(Self.status(429, retryAfter: "12"), path: "/v2/a/manifests/v1", cooldown: 30) == .endpoint(seconds: 12, rateLimited: true))
        #expect(FaultScope.classify(Self.status(429), path: "/v2/a/manifests/v1", cooldown: 30) == .endpoint(seconds: 30, rateLimited: true))
        #expect(FaultScope.classify(Self.status(503), path: "/v2/", cooldown: 30) == .endpoint(seconds: 30, rateLimited: false))
    }

    @Test func requestLevelFaults() {
        for s in [400, 401, 403, 404] {
            #expect(FaultScope.classify(Self.status(s), path: "/v2/a/manifests/v1", cooldown: 30) == .request)
        }
        #expect(FaultScope.classify(Self.status(500), path: "/v2/a/manifests/sha256:ab", cooldown: 30) == .path)
        #expect(FaultScope.classify(.invalidContent("hash"), path: "/v2/a/blobs/sha256:ab", cooldown: 30) == .object)
        #expect(FaultScope.classify(.auth("realm"), path: "/v2/a/manifests/v1", cooldown: 30) == .request)
        #expect(FaultScope.classify(.aborted("sink"), path: "/v2/a/blobs/sha256:ab", cooldown: 30) == .stop)
    }

    @Test func nsIsAddedToTheQuery() {
        #expect(UpstreamClient.namespaced("/v2/a/manifests/v1", "reg.example") == "/v2/a/manifests/v1?ns=reg.example")
        #expect(UpstreamClient.namespaced("/v2/a/tags/list?n=10&last=b", "reg.example:5000") == "/v2/a/tags/list?n=10&last=b&ns=reg.example%3A5000")
        #expect(UpstreamClient.namespaced("/v2/a/manifests/v1", nil) == "/v2/a/manifests/v1")
    }

    @Test func onlyMirrorEndpointsGetANamespace() {
        let policy = RealmPolicy(extraHosts: [])
        let logger = Logger(label: "t")
        #expect(UpstreamClient(configuration: .init(url: "http://127.0.0.1:1", mirror: true), realmPolicy: policy, registryName: "reg.example", logger: logger).namespace == "reg.example")
        #expect(UpstreamClient(configuration: .init(url: "http://127.0.0.1:1"), realmPolicy: policy, registryName: "reg.example", logger: logger).namespace == nil)
    }

    @Test func deadlinesCapLimitsAndShareFairly() {
        let now = ContinuousClock.now
        let d = Deadline(seconds: 9, now: now)
        #expect(abs((d.remaining(now: now) ?? 0) - 9) < 0.01)
        // Three endpoints left: each gets a third; at most its own limit.
        #expect(abs((d.share(attemptsLeft: 3, own: 10, now: now).remaining(now: now) ?? 0) - 3) < 0.01)
        #expect(abs((d.share(attemptsLeft: 3, own: 1, now: now).remaining(now: now) ?? 0) - 1) < 0.01)
        #expect(abs((d.share(attemptsLeft: 1, own: 10, now: now).remaining(now: now) ?? 0) - 9) < 0.01)
        #expect(Deadline.none.share(attemptsLeft: 2, own: 0, now: now) == .none)
        #expect(d.earlier(.none) == d && Deadline.none.earlier(d) == d)

        var small = TransferLimits(connectTimeout: 5, totalTimeout: 60)
        small.deadline = d
        let (l, head) = small.effective(now: now)
        #expect(abs(l.totalTimeout - 9) < 0.01 && l.connectTimeout == 5 && head == nil)
        var blob = TransferLimits(connectTimeout: 5, totalTimeout: 0)
        blob.deadline = Deadline(seconds: 2, now: now)
        let (b, blobHead) = blob.effective(now: now)
        #expect(b.totalTimeout == 0 && abs(b.connectTimeout - 2) < 0.01 && abs((blobHead ?? 0) - 2) < 0.01)
        #expect(TransferLimits(connectTimeout: 5, totalTimeout: 0).effective(now: now).headTimeout == nil)
    }

    /// After a 5xx on one path the `/v2/` probe decides; a probe the operation's deadline left no time for is
    /// no evidence (a CI run once cooled a healthy endpoint down because a loaded machine spent the budget first).
    @Test func aVersionCheckWithNoTimeLeftIsInconclusiveAndSendsNothing() async throws {
        let server = try LoopbackHTTPServer()
        defer { server.stop() }
        let client = UpstreamClient(configuration: .init(url: "http://127.0.0.1:\(server.port)"), logger: Logger(label: "t"))
        #expect(await client.versionCheck(deadline: Deadline(seconds: 30)) == .answers)
        let requests = server.requests
        #expect(await client.versionCheck(deadline: Deadline(seconds: 0)) == .inconclusive)
        #expect(server.requests == requests)

        // Nothing listens on a bound port: refused within the probe's own time is a sick endpoint.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        try #require(withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        let refused = UpstreamClient(configuration: .init(url: "http://127.0.0.1:\(UInt16(bigEndian: a.sin_port))"), logger: Logger(label: "t"))
        #expect(await refused.versionCheck(deadline: Deadline(seconds: 30)) == .fails)
    }
}
