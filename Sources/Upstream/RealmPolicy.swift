/// Which hosts may serve a registry's bearer-token realm.
///
/// A realm receives Cove's credentials (Docker token spec: the client authenticates to the realm), so a
/// challenge must not be able to send them anywhere. Allowed: the endpoint's own host, any host in the same
/// registrable domain (`auth.docker.io` for `registry-1.docker.io`, `dockerauth.cn-hangzhou.aliyuncs.com` for
/// `registry.cn-hangzhou.aliyuncs.com`), and hosts the configuration lists (`auth_hosts`).
public struct RealmPolicy: Sendable {
    /// Extra allowed hosts: exact names or `*.domain` wildcards (lowercase).
    public var extraHosts: [String]

    public init(extraHosts: [String]) { self.extraHosts = extraHosts.map { $0.lowercased() } }

    /// True when a realm on `realmHost` may be used for an endpoint on `endpointHost`.
    public func allows(realmHost: String, endpointHost: String) -> Bool {
        let realm = realmHost.lowercased(), endpoint = endpointHost.lowercased()
        if realm == endpoint { return true }
        if !Self.isIPLiteral(realm), !Self.isIPLiteral(endpoint),
           Self.registrableDomain(realm) == Self.registrableDomain(endpoint) {
            return true
        }
        return extraHosts.contains { pattern in
            if pattern.hasPrefix("*.") { return realm.hasSuffix(String(pattern.dropFirst(1))) }
            return realm == pattern
        }
    }

    /// The registrable domain of `host`, approximated without the public-suffix list: the last two labels, or
    /// three when the second-level label is a common one under a two-letter country code (`example.com.cn`).
    public static func registrableDomain(_ host: String) -> String {
        let labels = host.split(separator: ".")
        guard labels.count > 2 else { return host }
        let secondLevel: Set<Substring> = ["com", "net", "org", "gov", "edu", "co", "ac", "ne", "or", "go"]
        let keep = labels.last!.count == 2 && secondLevel.contains(labels[labels.count - 2]) ? 3 : 2
        return labels.suffix(keep).joined(separator: ".")
    }

    static func isIPLiteral(_ host: String) -> Bool {
        host.contains(":") || host.hasPrefix("[") || host.split(separator: ".").allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) }
    }
}
