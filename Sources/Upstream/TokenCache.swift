import Foundation
import Synchronization

/// Bearer tokens by (realm, service, scope), each kept until shortly before it expires.
///
/// Docker token spec: the token response carries `token` (or `access_token`), `expires_in` seconds (default 60
/// when absent) and optionally `issued_at`.
final class TokenCache: Sendable {
    struct Key: Hashable { let realm: String; let service: String; let scope: String }
    struct Entry { let token: String; let expires: ContinuousClock.Instant }
    private let entries = Mutex<[Key: Entry]>([:])

    /// A cached token still valid for at least a few more seconds.
    func token(for key: Key, now: ContinuousClock.Instant = .now) -> String? {
        entries.withLock { e in
            guard let entry = e[key] else { return nil }
            if entry.expires <= now { e[key] = nil; return nil }
            return entry.token
        }
    }

    /// Stores a token that the issuer says lives `expiresIn` seconds; it is dropped early by a margin of
    /// 10% (at most 30 s) so a token never expires in the middle of a request.
    func store(_ token: String, for key: Key, expiresIn: Double, now: ContinuousClock.Instant = .now) {
        let margin = min(30, expiresIn * 0.1)
        let life = max(0, expiresIn - margin)
        entries.withLock { $0[key] = Entry(token: token, expires: now + .milliseconds(Int64(life * 1000))) }
    }

    func remove(_ key: Key) { _ = entries.withLock { $0.removeValue(forKey: key) } }

    /// Parses a token endpoint response body.
    /// - Returns: the token and its lifetime in seconds, or nil when the body has no token.
    static func parseResponse(_ body: [UInt8]) -> (token: String, expiresIn: Double)? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        guard let token = (json["token"] as? String) ?? (json["access_token"] as? String), !token.isEmpty else { return nil }
        let expires = (json["expires_in"] as? NSNumber)?.doubleValue ?? 60
        return (token, expires > 0 ? expires : 60)
    }
}
