import Foundation
import Mirror
import OCI
import Testing
import Upstream

/// Small protocol details clients and proxies rely on.
@Suite("Protocol details", .serialized)
struct ProtocolDetailsTests {
    @Test func pushMethodsAnswer405WithAllow() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        for (method, path) in [("PUT", "/v2/a/manifests/v1"), ("DELETE", "/v2/a/blobs/sha256:\(String(repeating: "0", count: 64))"),
                               ("POST", "/v2/a/blobs/uploads/")] {
            let r = try await curl(cove.url + path, method: method)
            #expect(r.status == 405 && r.headers["allow"] == "GET, HEAD", "\(method) \(path)")
            #expect(UpstreamAnswerTests.errorJSON(r)?.code == "UNSUPPORTED")
        }
        #expect(up.allRequests.isEmpty)
    }

    @Test func aTagListPageSizeMustBeANonNegativeInteger() async throws {
        let up = try await FaultUpstream.start()
        defer { up.stop() }
        up.addImage("team/app", tag: "v1")
        let cove = try await InProcessCove(upstream: up.url)
        defer { cove.stop() }
        for n in ["abc", "-1", "1.5", ""] {
            let r = try await curl("\(cove.url)/v2/team/app/tags/list?n=\(n)")
            #expect(r.status == 400 && UpstreamAnswerTests.errorJSON(r)?.code == "PAGINATION_NUMBER_INVALID", "n=\(n)")
        }
        #expect(up.count("GET", "/tags/list") == 0)
        #expect(try await curl("\(cove.url)/v2/team/app/tags/list?n=1").status == 200)
    }
}
