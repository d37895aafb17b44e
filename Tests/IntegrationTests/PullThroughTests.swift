// Cove against a REAL upstream (Debian's docker-registry, distribution 2.8) and a REAL client (skopeo).
// Every test builds its own Fixture (temp dir, images, registry [+ token issuer], Cove) and tears it down.
// All traffic stays on 127.0.0.1; every child process and command is bounded in time.
//
// Cove contract used here: `cove serve --config FILE`, YAML keys listen, storage, upstream.{url, username,
// password_file}, cache.tag_ttl, log_level; GET /v2/ answers 200 when ready.
import Foundation
import Testing

// MARK: - helpers

/// Pulls `repo` (`:tag` or `@digest` in `reference`) from `cove` with skopeo, every platform, digests kept.
/// OCI images go to an OCI layout; the Docker manifest list goes to skopeo's `dir:` format, because writing it
/// into an OCI layout would convert it to an OCI index (a different digest), and `--preserve-digests` forbids that.
private func pullWithSkopeo(
    _ fixture: Fixture, from cove: CoveHandle, repo: String, reference: String, image: ImageSummary,
    into name: String, credentials: String? = nil
) async throws -> (CommandResult, URL) {
    let dest = fixture.dir.appendingPathComponent("pulls/\(name)")
    try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
    var args = ["copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0"]
    if let credentials { args += ["--src-creds", credentials] }
    args.append("docker://\(cove.host)/\(repo)\(reference)")
    args.append(image.isDockerMediaType ? "dir:\(dest.path)" : "oci:\(dest.path):pulled")
    let r = try await skopeo(args, authFile: fixture.authFile)
    return (r, dest)
}

/// Checks what skopeo wrote: the top manifest digest equals the upstream's, and every child manifest and blob
/// file is there with the right content (skopeo verified the digests while copying; we check again).
func verifyPulled(_ dest: URL, _ image: ImageSummary, _ context: String) async throws {
    let fm = FileManager.default
    func check(_ path: URL, _ digest: String, _ what: String) async throws {
        guard fm.fileExists(atPath: path.path) else {
            Issue.record("\(context): \(what) \(digest) missing at \(path.path)")
            return
        }
        #expect(try await sha256DigestOfFile(path) == digest, "\(context): \(what) at \(path.path) has the wrong content")
    }
    if image.isDockerMediaType {
        // skopeo dir: format: manifest.json (top), <hex>.manifest.json (instances), <hex> (blobs)
        try await check(dest.appendingPathComponent("manifest.json"), image.digest, "top manifest")
        for m in image.manifests where m.digest != image.digest {
            try await check(dest.appendingPathComponent("\(hex(m.digest)).manifest.json"), m.digest, "child manifest")
        }
        for b in image.blobs { try await check(dest.appendingPathComponent(hex(b.digest)), b.digest, "blob") }
    } else {
        let indexData = try Data(contentsOf: dest.appendingPathComponent("index.json"))
        let index = try JSONSerialization.jsonObject(with: indexData) as? [String: Any]
        let manifests = index?["manifests"] as? [[String: Any]] ?? []
        #expect(manifests.count == 1, "\(context): index.json should list one image: \(String(decoding: indexData, as: UTF8.self))")
        #expect(manifests.first?["digest"] as? String == image.digest,
                "\(context): pulled top manifest digest differs from upstream's \(image.digest): \(String(decoding: indexData, as: UTF8.self))")
        #expect(manifests.first?["mediaType"] as? String == image.mediaType, "\(context): media type changed")
        let blobs = dest.appendingPathComponent("blobs/sha256")
        for m in image.allManifests { try await check(blobs.appendingPathComponent(hex(m.digest)), m.digest, "manifest") }
        for b in image.blobs { try await check(blobs.appendingPathComponent(hex(b.digest)), b.digest, "blob") }
    }
}

private func hex(_ digest: String) -> String {
    digest.split(separator: ":").last.map(String.init) ?? digest
}

private func acceptHeaders() -> [String] { manifestAcceptTypes.map { "Accept: \($0)" } }

private func pullAndVerify(
    _ f: Fixture, _ cove: CoveHandle, repo: String, reference: String, image: ImageSummary, into name: String,
    credentials: String? = nil
) async throws {
    let (r, dest) = try await pullWithSkopeo(f, from: cove, repo: repo, reference: reference, image: image,
                                             into: name, credentials: credentials)
    guard r.succeeded else {
        Issue.record("skopeo pull of \(repo)\(reference) through Cove failed:\n\(r.summary)\n\(cove.logTail())")
        return
    }
    try await verifyPulled(dest, image, "\(repo)\(reference) → \(name)")
}

/// Cove must refuse: a non-2xx status with a registry JSON error envelope.
private func expectRegistryError(_ r: HTTPResponse, _ context: String, cove: CoveHandle) {
    #expect(!(200..<300).contains(r.status), "\(context): expected an error, got:\n\(r.transcript)\n\(cove.logTail(20))")
    #expect(!r.errorCodes.isEmpty, "\(context): expected a registry JSON error body {\"errors\":[{\"code\":..}]}, got:\n\(r.transcript)")
}

// MARK: - tests

@Suite("Pull through Cove from a real registry", .serialized, .timeLimit(.minutes(5)))
struct PullThroughTests {
    @Test("skopeo pulls through Cove; then, upstream stopped, again by tag and by digest from cache",
          arguments: ["single", "index", "dockerlist"])
    func pullThroughThenFromCache(imageName: String) async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push(imageName)
        let img = f.image(imageName)
        let cove = try await f.startCove()

        try await pullAndVerify(f, cove, repo: imageName, reference: ":v1", image: img, into: "first")
        #expect(!f.registryRequests("GET", pathPrefix: "/v2/\(imageName)/manifests/").isEmpty
                    || !f.registryRequests("HEAD", pathPrefix: "/v2/\(imageName)/manifests/").isEmpty,
                "the upstream never saw a manifest request: was the pull really served through Cove?")

        f.stopRegistry()
        try await pullAndVerify(f, cove, repo: imageName, reference: ":v1", image: img, into: "cached-by-tag")
        try await pullAndVerify(f, cove, repo: imageName, reference: "@\(img.digest)", image: img, into: "cached-by-digest")
        #expect(cove.process.isRunning, "cove died:\n\(cove.logTail())")
    }

    @Test("HEAD and GET agree on Content-Length, Docker-Content-Digest, Content-Type; GET body matches the digest",
          arguments: ["single", "index", "dockerlist"])
    func headAndGetAgree(imageName: String) async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push(imageName)
        let img = f.image(imageName)
        let cove = try await f.startCove()
        let base = "\(cove.url)/v2/\(imageName)"

        var targets: [(url: String, expected: BlobSummary, isManifest: Bool)] = []
        targets.append(("\(base)/manifests/v1", BlobSummary(digest: img.digest, mediaType: img.mediaType, size: img.size), true))
        for m in img.allManifests { targets.append(("\(base)/manifests/\(m.digest)", m, true)) }
        for b in img.blobs { targets.append(("\(base)/blobs/\(b.digest)", b, false)) }

        for t in targets {
            let headers = t.isManifest ? acceptHeaders() : []
            // HEAD first (cold: Cove has not fetched it yet), then GET, then HEAD again (warm).
            let head1 = try await httpRequest("HEAD", t.url, headers: headers)
            let get = try await httpRequest("GET", t.url, headers: headers)
            let head2 = try await httpRequest("HEAD", t.url, headers: headers)
            let all = "\(head1.transcript)\n\n\(get.transcript)\n\n\(head2.transcript)"
            guard head1.status == 200, get.status == 200, head2.status == 200 else {
                Issue.record("\(t.url): expected 200s:\n\(all)\n\(cove.logTail())")
                continue
            }
            for name in ["Content-Length", "Docker-Content-Digest", "Content-Type"] {
                #expect(head1.header(name) != nil, "\(t.url): HEAD lacks \(name):\n\(head1.transcript)")
                #expect(get.header(name) != nil, "\(t.url): GET lacks \(name):\n\(get.transcript)")
                #expect(head1.header(name) == get.header(name) && head2.header(name) == get.header(name),
                        "\(t.url): HEAD and GET disagree on \(name):\n\(all)")
            }
            #expect(get.header("Content-Length") == String(t.expected.size), "\(t.url): wrong Content-Length:\n\(get.transcript)")
            #expect(get.body.count == t.expected.size, "\(t.url): GET body is \(get.body.count) bytes, expected \(t.expected.size)")
            #expect(get.header("Docker-Content-Digest") == t.expected.digest, "\(t.url): wrong Docker-Content-Digest:\n\(get.transcript)")
            #expect(sha256Digest(get.body) == t.expected.digest, "\(t.url): GET body does not hash to \(t.expected.digest)")
            if t.isManifest {
                #expect(get.header("Content-Type") == t.expected.mediaType,
                        "\(t.url): manifest Content-Type should be its media type \(t.expected.mediaType):\n\(get.transcript)")
                #expect(get.body == (try img.layoutBlob(t.expected.digest)), "\(t.url): manifest bytes differ from the upstream's")
            }
        }
    }

    @Test("token auth: anonymous Cove pulls a public repository; a private one fails without credentials")
    func tokenAnonymous() async throws {
        let f = try await Fixture(mode: .token, privatePrefixes: ["private"])
        defer { f.shutdown() }
        // A different image in the private repository: Cove may serve content it already cached by digest to
        // anyone, so the private one must share no blob with the public one.
        try await f.push("single")
        try await f.push("index", to: "private/index")
        let cove = try await f.startCove(withCredentials: false)
        let before = try await f.issuerStats()

        try await pullAndVerify(f, cove, repo: "single", reference: ":v1", image: f.image("single"), into: "public")
        let after = try await f.issuerStats()
        let anonBefore = (before["anonymous"] as? Int) ?? 0
        let anonAfter = (after["anonymous"] as? Int) ?? 0
        #expect(anonAfter > anonBefore, "Cove should have fetched anonymous tokens from the issuer; stats: \(after["by_scope"] ?? "-")")

        let (r, _) = try await pullWithSkopeo(f, from: cove, repo: "private/index", reference: ":v1",
                                              image: f.image("index"), into: "private-anon")
        #expect(!r.succeeded, "pulling a private repository through an anonymous Cove should fail:\n\(r.summary)")
        let get = try await httpRequest("GET", "\(cove.url)/v2/private/index/manifests/v1", headers: acceptHeaders())
        expectRegistryError(get, "GET private manifest through anonymous Cove", cove: cove)
        let head = try await httpRequest("HEAD", "\(cove.url)/v2/private/index/manifests/v1", headers: acceptHeaders())
        #expect(!(200..<300).contains(head.status), "HEAD private manifest through anonymous Cove:\n\(head.transcript)")
        let blob = f.image("index").blobs[0].digest
        let getBlob = try await httpRequest("GET", "\(cove.url)/v2/private/index/blobs/\(blob)")
        expectRegistryError(getBlob, "GET private blob through anonymous Cove", cove: cove)
    }

    @Test("token auth: Cove with username + password_file pulls private repositories")
    func tokenWithCredentials() async throws {
        let f = try await Fixture(mode: .token, privatePrefixes: ["private"])
        defer { f.shutdown() }
        try await f.pushAll(prefix: "private/")
        try await f.push("single")
        let cove = try await f.startCove(withCredentials: true)
        let before = try await f.issuerStats()

        for name in Fixture.imageNames {
            try await pullAndVerify(f, cove, repo: "private/\(name)", reference: ":v1", image: f.image(name), into: "private-\(name)")
        }
        try await pullAndVerify(f, cove, repo: "single", reference: ":v1", image: f.image("single"), into: "public")
        let after = try await f.issuerStats()
        let aliceBefore = (before["by_user"] as? [String: Int])?[Fixture.username] ?? 0
        let aliceAfter = (after["by_user"] as? [String: Int])?[Fixture.username] ?? 0
        #expect(aliceAfter > aliceBefore, "Cove should have fetched tokens as \(Fixture.username); stats: \(after["by_scope"] ?? "-")")
        #expect((after["unauthorized"] as? Int ?? 0) == (before["unauthorized"] as? Int ?? 0),
                "Cove sent wrong credentials to the token issuer")
        #expect((after["bad_requests"] as? Int ?? 0) == 0, "Cove asked the issuer for a wrong service: \(after["log"] ?? "-")")
    }

    @Test("htpasswd (Basic) upstream: works with credentials, fails without")
    func htpasswd() async throws {
        let f = try await Fixture(mode: .htpasswd)
        defer { f.shutdown() }
        try await f.pushAll()

        let anonymous = try await f.startCove(withCredentials: false)
        let (r, _) = try await pullWithSkopeo(f, from: anonymous, repo: "single", reference: ":v1",
                                              image: f.image("single"), into: "anon")
        #expect(!r.succeeded, "pulling through a Cove without upstream credentials should fail:\n\(r.summary)")
        let get = try await httpRequest("GET", "\(anonymous.url)/v2/single/manifests/v1", headers: acceptHeaders())
        expectRegistryError(get, "GET manifest through Cove without credentials", cove: anonymous)

        let cove = try await f.startCove(withCredentials: true)
        for name in Fixture.imageNames {
            try await pullAndVerify(f, cove, repo: name, reference: ":v1", image: f.image(name), into: "creds-\(name)")
        }
    }

    @Test("tags/list through Cove matches the upstream's")
    func tagsList() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single", tags: ["v1", "v2", "latest"])
        try await f.push("dockerlist", tags: ["v1", "3.0"])
        let cove = try await f.startCove()
        for repo in ["single", "dockerlist"] {
            let upstream = try await httpRequest("GET", "\(f.registryURL)/v2/\(repo)/tags/list")
            let mirrored = try await httpRequest("GET", "\(cove.url)/v2/\(repo)/tags/list")
            guard upstream.status == 200, mirrored.status == 200 else {
                Issue.record("tags/list \(repo):\n\(upstream.transcript)\n\n\(mirrored.transcript)\n\(cove.logTail())")
                continue
            }
            struct TagList: Decodable, Equatable { var name: String; var tags: [String]? }
            let u = try JSONDecoder().decode(TagList.self, from: upstream.body)
            let m = try? JSONDecoder().decode(TagList.self, from: mirrored.body)
            #expect(m?.name == u.name, "tags/list name differs:\n\(mirrored.transcript)")
            #expect((m?.tags ?? []).sorted() == (u.tags ?? []).sorted(),
                    "tags/list differs: upstream \(upstream.bodyText) vs cove \(mirrored.bodyText)")
            #expect(mirrored.header("Content-Type")?.hasPrefix("application/json") == true,
                    "tags/list Content-Type:\n\(mirrored.transcript)")
        }
    }

    @Test("push attempts answer 405 UNSUPPORTED and never reach the upstream")
    func pushIsRejected() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single")
        let cove = try await f.startCove()
        let img = f.image("single")
        let putsBefore = f.registryRequests("PUT").count
        let postsBefore = f.registryRequests("POST").count

        let manifest = try img.layoutBlob(img.digest)
        let put = try await httpRequest("PUT", "\(cove.url)/v2/single/manifests/v9",
                                        headers: ["Content-Type: \(img.mediaType)"], body: manifest)
        #expect(put.status == 405, "PUT manifest:\n\(put.transcript)")
        #expect(put.errorCodes.contains("UNSUPPORTED"), "PUT manifest error code:\n\(put.transcript)")

        let post = try await httpRequest("POST", "\(cove.url)/v2/single/blobs/uploads/", headers: ["Content-Length: 0"], body: Data())
        #expect(post.status == 405, "POST blob upload:\n\(post.transcript)")
        #expect(post.errorCodes.contains("UNSUPPORTED"), "POST blob upload error code:\n\(post.transcript)")

        let (r, _) = try await runSkopeoPush(f, cove: cove)
        #expect(!r.succeeded, "skopeo push through Cove should fail:\n\(r.summary)")

        #expect(f.registryRequests("PUT").count == putsBefore, "a PUT reached the upstream")
        #expect(f.registryRequests("POST").count == postsBefore, "a POST reached the upstream")
    }

    @Test("an invalid repository name answers 400 NAME_INVALID")
    func invalidName() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        let cove = try await f.startCove()
        let r = try await httpRequest("GET", "\(cove.url)/v2/Foo/manifests/v1", headers: acceptHeaders())
        #expect(r.status == 400, "GET /v2/Foo/manifests/v1:\n\(r.transcript)")
        #expect(r.errorCodes.contains("NAME_INVALID"), "GET /v2/Foo/manifests/v1 error code:\n\(r.transcript)")
        #expect(f.registryRequests(pathPrefix: "/v2/Foo").isEmpty, "an invalid name reached the upstream")
    }

    @Test("unknown manifests and blobs answer 404 MANIFEST_UNKNOWN / BLOB_UNKNOWN; uncached with the upstream down is an error envelope")
    func unknownAndUnreachable() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("single")
        let cove = try await f.startCove()
        let missingDigest = "sha256:" + String(repeating: "ab", count: 32)

        let tag = try await httpRequest("GET", "\(cove.url)/v2/single/manifests/nosuchtag", headers: acceptHeaders())
        #expect(tag.status == 404, "unknown tag:\n\(tag.transcript)")
        #expect(tag.errorCodes.contains("MANIFEST_UNKNOWN"), "unknown tag error code:\n\(tag.transcript)")
        let headTag = try await httpRequest("HEAD", "\(cove.url)/v2/single/manifests/nosuchtag", headers: acceptHeaders())
        #expect(headTag.status == 404, "HEAD unknown tag:\n\(headTag.transcript)")

        let manifest = try await httpRequest("GET", "\(cove.url)/v2/single/manifests/\(missingDigest)", headers: acceptHeaders())
        #expect(manifest.status == 404, "unknown manifest digest:\n\(manifest.transcript)")
        #expect(manifest.errorCodes.contains("MANIFEST_UNKNOWN"), "unknown manifest digest error code:\n\(manifest.transcript)")

        let blob = try await httpRequest("GET", "\(cove.url)/v2/single/blobs/\(missingDigest)")
        #expect(blob.status == 404, "unknown blob:\n\(blob.transcript)")
        #expect(blob.errorCodes.contains("BLOB_UNKNOWN"), "unknown blob error code:\n\(blob.transcript)")
        let headBlob = try await httpRequest("HEAD", "\(cove.url)/v2/single/blobs/\(missingDigest)")
        #expect(headBlob.status == 404, "HEAD unknown blob:\n\(headBlob.transcript)")

        let repo = try await httpRequest("GET", "\(cove.url)/v2/nosuchrepo/manifests/v1", headers: acceptHeaders())
        #expect(repo.status == 404, "unknown repository:\n\(repo.transcript)")
        #expect(!repo.errorCodes.isEmpty, "unknown repository error body:\n\(repo.transcript)")

        // Upstream gone, nothing cached: an error (not a hang, not a 200), in the registry envelope.
        f.stopRegistry()
        let down = try await httpRequest("GET", "\(cove.url)/v2/single/manifests/v1", headers: acceptHeaders(), timeout: 60)
        expectRegistryError(down, "uncached manifest with the upstream down", cove: cove)
        let downBlob = try await httpRequest("GET", "\(cove.url)/v2/single/blobs/\(f.image("single").blobs[0].digest)", timeout: 60)
        expectRegistryError(downBlob, "uncached blob with the upstream down", cove: cove)
        #expect(cove.process.isRunning, "cove died:\n\(cove.logTail())")
    }

    static let largeBlobSize = 24 * 1024 * 1024

    @Test("a 24 MiB layer pulls through byte-exact, and 32 concurrent cold GETs fetch it from the upstream once")
    func largeBlob() async throws {
        let f = try await Fixture(mode: .plain, blobSize: PullThroughTests.largeBlobSize)
        defer { f.shutdown() }
        try await f.push("big")
        let img = f.image("big")
        guard let layer = img.blobs.first(where: { $0.size == PullThroughTests.largeBlobSize }) else {
            Issue.record("make_images.py made no \(PullThroughTests.largeBlobSize)-byte layer: \(img.blobs)")
            return
        }
        let cove = try await f.startCove()
        let url = "\(cove.url)/v2/big/blobs/\(layer.digest)"

        // 32 clients ask for the same uncached blob at once: one fill, 32 complete, correct bodies.
        let downloads = f.dir.appendingPathComponent("downloads")
        try FileManager.default.createDirectory(at: downloads, withIntermediateDirectories: true)
        let responses = try await withThrowingTaskGroup(of: (Int, HTTPResponse).self) { group in
            for i in 0..<32 {
                group.addTask {
                    (i, try await httpRequest("GET", url, saveBodyTo: downloads.appendingPathComponent("get-\(i)"), timeout: 120))
                }
            }
            var out: [(Int, HTTPResponse)] = []
            for try await r in group { out.append(r) }
            return out
        }
        #expect(responses.count == 32)
        for (i, r) in responses {
            #expect(r.status == 200, "concurrent GET \(i):\n\(r.transcript)\n\(cove.logTail())")
            #expect(r.header("Content-Length") == String(layer.size), "concurrent GET \(i):\n\(r.transcript)")
            #expect(r.header("Docker-Content-Digest") == layer.digest, "concurrent GET \(i):\n\(r.transcript)")
            let file = downloads.appendingPathComponent("get-\(i)")
            let size = (try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? -1
            #expect(size == layer.size, "concurrent GET \(i): got \(size) bytes, expected \(layer.size)")
            #expect(try await sha256DigestOfFile(file) == layer.digest, "concurrent GET \(i): body does not hash to the digest")
        }
        let upstreamGets = f.registryRequests("GET", pathPrefix: "/v2/big/blobs/\(layer.digest)")
        #expect(upstreamGets.count == 1, "the upstream served the blob \(upstreamGets.count) times, expected one fill:\n\(upstreamGets.joined(separator: "\n"))")

        // And a real client pull, every blob verified by skopeo, then again from cache with the upstream gone.
        try await pullAndVerify(f, cove, repo: "big", reference: ":v1", image: img, into: "big-first")
        f.stopRegistry()
        try await pullAndVerify(f, cove, repo: "big", reference: "@\(img.digest)", image: img, into: "big-cached")
    }

    @Test("several registries on one port: skopeo pulls through a path prefix; containerd-style ns= requests route too")
    func severalRegistries() async throws {
        let f = try await Fixture(mode: .plain)
        defer { f.shutdown() }
        try await f.push("index")
        let img = f.image("index")
        let dead = try refusedPort()
        // docker.io (the default) points at a closed port: only the routed registry may be asked.
        let cove = try await f.startCove(registriesYAML: """
        registries:
          docker.io:
            endpoints:
              - url: "http://127.0.0.1:\(dead)"
          local.test:
            endpoints:
              - url: "\(f.registryURL)"
        """)
        try await pullAndVerify(f, cove, repo: "local.test/index", reference: ":v1", image: img, into: "prefixed")

        // containerd: HEAD by tag with ?ns=, then GET by digest with ?ns=, no /v2/ ping.
        let head = try await httpRequest("HEAD", "\(cove.url)/v2/index/manifests/v1?ns=local.test",
                                         headers: ["Accept: application/vnd.oci.image.index.v1+json"])
        #expect(head.status == 200, "\(head.transcript)")
        #expect(head.header("Docker-Content-Digest") == img.digest)
        let child = try #require(img.manifests.first)
        let get = try await httpRequest("GET", "\(cove.url)/v2/index/manifests/\(child.digest)?ns=local.test")
        #expect(get.status == 200, "\(get.transcript)")
        #expect(get.header("Docker-Content-Digest") == child.digest)

        // Without a route the default registry is asked, and it is down: an error envelope, not a hang.
        let fallback = try await httpRequest("GET", "\(cove.url)/v2/index/manifests/v1")
        expectRegistryError(fallback, "default registry down", cove: cove)
        // Unconfigured registries are refused, by prefix and by ns.
        let refused = try await httpRequest("GET", "\(cove.url)/v2/quay.io/index/manifests/v1")
        #expect(refused.status == 403 && refused.errorCodes.contains("DENIED"), "\(refused.transcript)")
        let refusedNs = try await httpRequest("GET", "\(cove.url)/v2/index/manifests/v1?ns=quay.io")
        #expect(refusedNs.status == 403 && refusedNs.errorCodes.contains("DENIED"), "\(refusedNs.transcript)")
    }
}

/// skopeo copy of the `single` image *to* Cove (which must refuse it).
private func runSkopeoPush(_ f: Fixture, cove: CoveHandle) async throws -> (CommandResult, Void) {
    let img = f.image("single")
    let r = try await skopeo(["copy", "--dest-tls-verify=false", "--retry-times", "0", "oci:\(img.layout):\(img.tag)",
                              "docker://\(cove.host)/single:pushed"], authFile: f.authFile, timeout: 60)
    return (r, ())
}