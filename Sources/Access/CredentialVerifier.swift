import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix
import Synchronization

/// Checks client user names and passwords against an `Htpasswd`, with a bounded cache of recent successes.
///
/// bcrypt costs ~50–100 ms per check at cost 10, and a client sends its `Authorization` with every request
/// (a pull of 20 layers is 20+ requests). A success is remembered for `lifetime` under a salted SHA-256 of
/// user and password (the key cannot be reversed or replayed into another process); at most `capacity`
/// entries, the oldest dropped first. Failures are never remembered: each wrong guess costs a full bcrypt.
/// An unknown user is checked against a dummy hash, so its answer takes as long as a wrong password.
/// bcrypt runs on `NIOThreadPool.singleton`, never on an event loop or the cooperative pool.
public final class CredentialVerifier: Sendable {
    private struct State {
        var htpasswd: Htpasswd
        /// Compared with when the user is unknown: a hash of a random password at the file's highest cost, so an
        /// unknown user takes as long as a wrong password (no user-name oracle in the response time).
        var dummyHash: String
        /// Cache key → when the success expires.
        var successes: [SHA256Digest: ContinuousClock.Instant] = [:]
        /// Insertion order of `successes`, for dropping the oldest.
        var order: [SHA256Digest] = []
    }

    private let state: Mutex<State>
    private let runs = Atomic<Int>(0)
    private let salt: [UInt8] = (0..<32).map { _ in UInt8.random(in: .min ... .max) }
    public let capacity: Int
    public let lifetime: Duration

    /// A bcrypt hash of a random password at the highest cost among `htpasswd`'s hashes (10 for an empty file).
    public static func dummyHash(matching htpasswd: Htpasswd) -> String {
        let cost = htpasswd.users.values.compactMap { hash -> Int? in
            let bytes = Array(hash.utf8)
            return bytes.count > 6 ? Int(String(decoding: bytes[4..<6], as: UTF8.self)) : nil
        }.max() ?? 10
        return Bcrypt.hash(UUID().uuidString, cost: UInt8(clamping: min(max(cost, 4), 31))).replacingOccurrences(of: "$2y$", with: "$2b$")
    }

    /// - Parameters:
    ///   - capacity: successes remembered at most (default 1024).
    ///   - lifetime: how long one is remembered (default 5 minutes).
    public init(htpasswd: Htpasswd, capacity: Int = 1024, lifetime: Duration = .seconds(300)) {
        state = Mutex(State(htpasswd: htpasswd, dummyHash: Self.dummyHash(matching: htpasswd)))
        self.capacity = max(1, capacity)
        self.lifetime = lifetime
    }

    /// Replaces the users (htpasswd reloaded on SIGHUP) and forgets every remembered success, so a removed
    /// user or a changed password takes effect at once.
    public func replace(_ htpasswd: Htpasswd) {
        let dummy = Self.dummyHash(matching: htpasswd)
        state.withLock { s in
            s.htpasswd = htpasswd
            s.dummyHash = dummy
            s.successes = [:]
            s.order = []
        }
    }

    /// Number of users in the current file.
    public var userCount: Int { state.withLock { $0.htpasswd.users.count } }

    /// bcrypt computations since start (for tests and status: a cached success costs none).
    public var bcryptRuns: Int { runs.load(ordering: .relaxed) }

    /// Successes remembered now (for tests and status).
    public var cachedCount: Int { state.withLock { $0.successes.count } }

    /// True when `password` is `username`'s.
    public func verify(username: String, password: String, now: ContinuousClock.Instant = .now) async -> Bool {
        let key = cacheKey(username, password)
        let (hash, cached, dummy) = state.withLock { s -> (String?, Bool, String) in
            if let until = s.successes[key], until > now { return (s.htpasswd.users[username], true, s.dummyHash) }
            return (s.htpasswd.users[username], false, s.dummyHash)
        }
        if cached, hash != nil { return true }
        let target = hash ?? dummy
        runs.add(1, ordering: .relaxed)
        let matches = (try? await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: target) }) ?? false
        guard matches, let hash else { return false }
        state.withLock { s in
            // The file may have been reloaded while bcrypt ran: remember only a success for the current hash.
            guard s.htpasswd.users[username] == hash else { return }
            if s.successes.updateValue(now + lifetime, forKey: key) == nil { s.order.append(key) }
            while s.order.count > capacity {
                s.successes[s.order.removeFirst()] = nil
            }
            // Expired entries are dropped as the order list cycles; drop a run of them at the front too.
            while let first = s.order.first, let until = s.successes[first], until <= now {
                s.order.removeFirst()
                s.successes[first] = nil
            }
        }
        return true
    }

    private func cacheKey(_ username: String, _ password: String) -> SHA256Digest {
        var h = SHA256()
        h.update(data: salt)
        h.update(data: Array(username.utf8))
        h.update(data: [0])
        h.update(data: Array(password.utf8))
        return h.finalize()
    }
}
