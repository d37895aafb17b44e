import OCI
import Testing

@Suite("OCI name, tag and digest grammar")
struct NameGrammarTests {
    @Test(arguments: [
        "busybox", "library/busybox", "a", "a/b/c/d", "my-app", "my--app", "my_app", "my__app", "my.app",
        "0", "team1/app.v2/api-server", "a-b_c.d", String(repeating: "a", count: 255),
    ])
    func validNames(_ name: String) throws {
        #expect(try RepositoryName(name).value == name)
    }

    @Test(arguments: [
        "", "..", "a/..", "../etc/passwd", "a/../b", "%2e%2e", "a/%2e%2e", "Busybox", "library/Ubuntu", "a//b", "/a", "a/",
        "a.", ".a", "a..b", "a___b", "-a", "a-", "_a", "a_", "a b", "a\u{0}b", "a:b", "a@b", "a/b.", "a/-b", "é",
        String(repeating: "a", count: 256), "a\\b", "a%2fb",
    ])
    func invalidNames(_ name: String) {
        #expect(throws: DistributionError.self) { try RepositoryName(name) }
        do { _ = try RepositoryName(name) } catch { #expect(error.code == .nameInvalid) }
    }

    @Test func overLongNameMessageSaysWhy() {
        do { _ = try RepositoryName(String(repeating: "ab/", count: 100) + "c"); Issue.record("accepted") } catch {
            #expect(error.message.contains("255"))
        }
    }

    @Test(arguments: ["latest", "v1", "1.36.1-musl", "_x", "A_b.c-D", String(repeating: "t", count: 128)])
    func validTags(_ tag: String) throws {
        #expect(try Tag(tag).value == tag)
    }

    @Test(arguments: ["", ".hidden", "-x", "a/b", "a:b", "a b", "..", "%2e", String(repeating: "t", count: 129), "ta\u{e9}g"])
    func invalidTags(_ tag: String) {
        do { _ = try Tag(tag); Issue.record("accepted \(tag)") } catch { #expect(error.code == .tagInvalid) }
    }

    @Test func validDigests() throws {
        let sha256 = "sha256:" + String(repeating: "a1", count: 32)
        let sha512 = "sha512:" + String(repeating: "0f", count: 64)
        #expect(try Digest(sha256).description == sha256)
        #expect(try Digest(sha512).algorithm == .sha512)
    }

    @Test(arguments: [
        "sha256", "sha256:", "sha256:abc", "sha256:" + String(repeating: "A", count: 64), "md5:" + String(repeating: "a", count: 32),
        "sha256:" + String(repeating: "g", count: 64), "sha256:" + String(repeating: "a", count: 65), ":" + String(repeating: "a", count: 64),
        "sha256:../../" + String(repeating: "a", count: 58), "sha512:" + String(repeating: "a", count: 64),
    ])
    func invalidDigests(_ digest: String) {
        do { _ = try Digest(digest); Issue.record("accepted \(digest)") } catch { #expect(error.code == .digestInvalid) }
    }

    @Test func referenceIsDigestWhenItHasAColon() throws {
        let d = "sha256:" + String(repeating: "b", count: 64)
        #expect(try Reference(d) == .digest(try Digest(d)))
        #expect(try Reference("v1.2") == .tag(try Tag("v1.2")))
        do { _ = try Reference("sha256:short"); Issue.record("accepted") } catch { #expect(error.code == .digestInvalid) }
    }

    @Test func sha256OfKnownInput() {
        // sha256("abc") from FIPS 180-2 appendix B.1.
        #expect(Digest.sha256(of: Array("abc".utf8)).description == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
