import Access
import Foundation
import HummingbirdBcrypt
import Testing

/// `htpasswd -nbB user password` from apache2-utils: a real `$2y$` line as operators make them.
func htpasswdLine(_ user: String, _ password: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/htpasswd")
    p.arguments = ["-nbB", user, password]
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

@Suite("htpasswd files")
struct HtpasswdTests {
    @Test func readsBcryptLinesFromHtpasswdB() async throws {
        let line = try htpasswdLine("alice", "s3cret")
        #expect(line.hasPrefix("alice:$2y$"))
        let file = try Htpasswd.parse("# users\n\n\(line)\nbob:\(Bcrypt.hash("pw", cost: 4))\r\n")
        #expect(file.users.keys.sorted() == ["alice", "bob"])
        let verifier = CredentialVerifier(htpasswd: file)
        #expect(await verifier.verify(username: "alice", password: "s3cret"))
        #expect(await !verifier.verify(username: "alice", password: "S3cret"))
        #expect(await verifier.verify(username: "bob", password: "pw"))
        #expect(await !verifier.verify(username: "carol", password: "pw"))
    }

    /// An unknown user is checked against a hash of the file's own cost: `htpasswd -B` writes cost 5, and a
    /// cost-10 dummy would make unknown names 30 times slower than known ones (a user-name oracle).
    @Test func unknownUsersCostWhatTheFilesHashesCost() throws {
        let cost5 = try Htpasswd.parse("alice:\(Bcrypt.hash("pw", cost: 5))\n")
        #expect(CredentialVerifier.dummyHash(matching: cost5).dropFirst(4).hasPrefix("05$"))
        let mixed = try Htpasswd.parse("alice:\(Bcrypt.hash("pw", cost: 5))\nbob:\(Bcrypt.hash("pw", cost: 7))\n")
        #expect(CredentialVerifier.dummyHash(matching: mixed).dropFirst(4).hasPrefix("07$"))
    }

    @Test(arguments: [
        ("alice:$apr1$abcdefgh$0123456789abcdefghijkl", 2),  // MD5 (htpasswd -m)
        ("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", 2),      // SHA-1 (htpasswd -s)
        ("alice:plaintext", 2),
        ("alice:abXyZ0123abcd", 2),                           // crypt(3)
        ("no-colon-here", 2),
    ])
    func refusesOtherHashKindsNamingTheLine(_ bad: String, _ line: Int) throws {
        let good = try htpasswdLine("bob", "pw")
        #expect {
            _ = try Htpasswd.parse("\(good)\n\(bad)\n")
        } throws: { error in
            guard let e = error as? HtpasswdError else { return false }
            // The line number, never the hash.
            let hashPart = bad.split(separator: ":").dropFirst().joined()
            return e.line == line && e.description.contains("line \(line)") && (hashPart.isEmpty || !e.description.contains(hashPart))
        }
    }

    @Test func refusesDuplicateUsersAndUnreadableFiles() throws {
        let a = try htpasswdLine("alice", "one"), b = try htpasswdLine("alice", "two")
        #expect(throws: HtpasswdError(line: 2, "user alice is listed twice")) { try Htpasswd.parse("\(a)\n\(b)") }
        #expect(throws: HtpasswdError.self) { try Htpasswd.load(path: "/nonexistent/htpasswd") }
    }
}

@Suite("credential cache")
struct CredentialVerifierTests {
    @Test func aSuccessIsRememberedAndAFailureIsNot() async throws {
        let verifier = CredentialVerifier(htpasswd: try Htpasswd.parse(try htpasswdLine("alice", "s3cret")))
        for _ in 0..<20 { #expect(await verifier.verify(username: "alice", password: "s3cret")) }
        #expect(verifier.bcryptRuns == 1, "20 checks of the same credentials cost one bcrypt")
        for _ in 0..<3 { #expect(await !verifier.verify(username: "alice", password: "wrong")) }
        #expect(verifier.bcryptRuns == 4, "every wrong guess costs a bcrypt")
        #expect(await !verifier.verify(username: "nobody", password: "s3cret"))
        #expect(verifier.bcryptRuns == 5, "an unknown user is checked against a dummy hash too")
        #expect(verifier.cachedCount == 1)
    }

    @Test func successesExpireAndAreBounded() async throws {
        let text = try ["a", "b", "c"].map { try htpasswdLine($0, "pw-\($0)") }.joined(separator: "\n")
        let verifier = CredentialVerifier(htpasswd: try Htpasswd.parse(text), capacity: 2, lifetime: .seconds(60))
        let now = ContinuousClock.now
        for u in ["a", "b", "c"] { #expect(await verifier.verify(username: u, password: "pw-\(u)", now: now)) }
        #expect(verifier.cachedCount == 2)
        #expect(await verifier.verify(username: "c", password: "pw-c", now: now))
        #expect(verifier.bcryptRuns == 3, "the newest success is still cached")
        #expect(await verifier.verify(username: "c", password: "pw-c", now: now + .seconds(61)))
        #expect(verifier.bcryptRuns == 4, "an expired success costs a bcrypt again")
    }

    @Test func replacingTheFileForgetsSuccesses() async throws {
        let verifier = CredentialVerifier(htpasswd: try Htpasswd.parse(try htpasswdLine("alice", "old")))
        #expect(await verifier.verify(username: "alice", password: "old"))
        verifier.replace(try Htpasswd.parse(try htpasswdLine("alice", "new")))
        #expect(await !verifier.verify(username: "alice", password: "old"))
        #expect(await verifier.verify(username: "alice", password: "new"))
    }
}

@Suite("repository patterns")
struct RepositoryPatternTests {
    @Test func globSemantics() throws {
        let p = try RepositoryPattern("myorg/*")
        #expect(p.matches("myorg/app") && p.matches("myorg/team/app"))
        #expect(!p.matches("myorg") && !p.matches("other/myorg/app") && !p.matches("myorgx/app"))
        #expect(try RepositoryPattern("library/busybox").matches("library/busybox"))
        #expect(try !RepositoryPattern("library/busybox").matches("library/busybox2"))
        #expect(try RepositoryPattern("*/app").matches("a/b/app"))
        #expect(try RepositoryPattern("a*b*c").matches("axxbyyc") && !RepositoryPattern("a*b*c").matches("axxbyy"))
        #expect(try RepositoryPattern("*").matches("anything/at/all"))
        #expect(throws: RepositoryPatternError.self) { try RepositoryPattern("MyOrg/*") }
        #expect(throws: RepositoryPatternError.self) { try RepositoryPattern("") }
        #expect(throws: RepositoryPatternError.self) { try RepositoryPattern("a b") }
    }

    @Test func denyWinsAndNoAllowListMeansAll() throws {
        let open = RepositoryPolicy(deny: [try RepositoryPattern("library/evil")])
        #expect(open.permits("library/busybox") && open.permits("myorg/app") && !open.permits("library/evil"))
        let closed = RepositoryPolicy(allow: [try RepositoryPattern("library/*")], deny: [try RepositoryPattern("library/evil")])
        #expect(closed.permits("library/busybox") && !closed.permits("myorg/app") && !closed.permits("library/evil"))
        #expect(RepositoryPolicy(allow: []).permits("x") == false)
    }
}
