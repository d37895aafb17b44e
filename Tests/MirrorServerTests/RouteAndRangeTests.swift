import MirrorServer
import OCI
import Testing

@Suite("Registry route parsing and byte ranges")
struct RouteAndRangeTests {
    let digest = "sha256:" + String(repeating: "c", count: 64)

    @Test func routes() throws {
        #expect(try RegistryRoute(path: "/v2/") == .base)
        #expect(try RegistryRoute(path: "/v2") == .base)
        func t(_ n: String, _ r: String? = nil) throws -> RepositoryTarget { RepositoryTarget(registry: r, name: try RepositoryName(n)) }
        #expect(try RegistryRoute(path: "/v2/library/busybox/manifests/latest") == .manifest(try t("library/busybox"), .tag(try Tag("latest"))))
        #expect(try RegistryRoute(path: "/v2/a/b/c/blobs/\(digest)") == .blob(try t("a/b/c"), try Digest(digest)))
        #expect(try RegistryRoute(path: "/v2/a/tags/list") == .tags(try t("a")))
        #expect(try RegistryRoute(path: "/v2/a/blobs/uploads/") == .upload)
        #expect(try RegistryRoute(path: "/v2/a/blobs/uploads/123-abc") == .upload)
        // A repository may itself contain a "manifests" component; the last marker wins, as in distribution.
        #expect(try RegistryRoute(path: "/v2/x/manifests/y/manifests/v1") == .manifest(try t("x/manifests/y"), .tag(try Tag("v1"))))
        // A registry-host prefix is split off when the router says the component is a registry.
        let isHost: (Substring) -> Bool = { $0.contains(".") || $0.contains(":") }
        #expect(try RegistryRoute(path: "/v2/ghcr.io/org/app/manifests/v1", isRegistry: isHost) == .manifest(try t("org/app", "ghcr.io"), .tag(try Tag("v1"))))
        #expect(try RegistryRoute(path: "/v2/127.0.0.1:5000/app/blobs/\(digest)", isRegistry: isHost) == .blob(try t("app", "127.0.0.1:5000"), try Digest(digest)))
        #expect(try RegistryRoute(path: "/v2/Quay.IO/a/tags/list", isRegistry: isHost) == .tags(try t("a", "quay.io")))
        #expect(try RegistryRoute(path: "/v2/library/busybox/manifests/v1", isRegistry: isHost) == .manifest(try t("library/busybox"), .tag(try Tag("v1"))))
        #expect(try RegistryRoute(path: "/healthz") == nil)
        #expect(try RegistryRoute(path: "/v2/justaname") == nil)
    }

    @Test(arguments: [
        ("/v2/../etc/manifests/latest", DistributionErrorCode.nameInvalid),
        ("/v2/%2e%2e/manifests/latest", .nameInvalid),
        ("/v2/a/%2e%2e/blobs/sha256:" + String(repeating: "c", count: 64), .nameInvalid),
        ("/v2/Upper/manifests/latest", .nameInvalid),
        ("/v2/a/manifests/bad%20tag", .tagInvalid),
        ("/v2/a/manifests/..", .tagInvalid),
        ("/v2/a/blobs/sha256:nothex", .digestInvalid),
        ("/v2/a/blobs/latest", .digestInvalid),
        ("/v2/" + String(repeating: "a", count: 300) + "/manifests/v1", .nameInvalid),
        ("/v2//manifests/v1", .nameInvalid),
    ])
    func invalidRoutes(_ path: String, _ code: DistributionErrorCode) {
        do {
            _ = try RegistryRoute(path: path)
            Issue.record("accepted \(path)")
        } catch {
            #expect(error.code == code)
        }
    }

    @Test func ranges() {
        #expect(ByteRange.parse(nil, size: 10) == .whole)
        #expect(ByteRange.parse("bytes=0-4", size: 10) == .range(.init(start: 0, end: 4)))
        #expect(ByteRange.parse("bytes=5-", size: 10) == .range(.init(start: 5, end: 9)))
        #expect(ByteRange.parse("bytes=-3", size: 10) == .range(.init(start: 7, end: 9)))
        #expect(ByteRange.parse("bytes=-30", size: 10) == .range(.init(start: 0, end: 9)))
        #expect(ByteRange.parse("bytes=8-100", size: 10) == .range(.init(start: 8, end: 9)))
        #expect(ByteRange.parse("bytes=10-", size: 10) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=-0", size: 10) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=5-2", size: 10) == .whole)
        #expect(ByteRange.parse("bytes=0-1,3-4", size: 10) == .whole)
        #expect(ByteRange.parse("items=0-1", size: 10) == .whole)
        #expect(ByteRange.parse("bytes=x-y", size: 10) == .whole)
        #expect(ByteRange.parse("BYTES=0-1", size: 10) == .range(.init(start: 0, end: 1)))
        #expect(ByteRange.parse("bytes=+1-5", size: 10) == .whole)
        #expect(ByteRange.parse("bytes=99999999999999999999-", size: 10) == .unsatisfiable)
        #expect(ByteRange.parse("bytes=0-99999999999999999999", size: 10) == .range(.init(start: 0, end: 9)))
        #expect(ByteRange.parse("bytes=-99999999999999999999", size: 10) == .range(.init(start: 0, end: 9)))
    }
}
