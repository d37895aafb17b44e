import Foundation

/// The proxy a URL goes through, decided from the standard variables the way libcurl reads them, so Cove knows
/// whether the address a connection uses is the target's or the proxy's (the SSRF check needs to know).
/// `CurlTransfer` hands libcurl this decision explicitly (`CURLOPT_PROXY`, `CURLOPT_NOPROXY`), so the two
/// cannot disagree.
///
/// Variables (libcurl's rules, `CURLOPT_PROXY` man page): `http_proxy` (lowercase only) for http URLs,
/// `https_proxy`/`HTTPS_PROXY` for https, then `all_proxy`/`ALL_PROXY`; `no_proxy`/`NO_PROXY` is a comma list
/// of host names (matching the name and its subdomains, a leading `.` ignored), IP addresses, CIDR ranges, or `*`.
struct ProxyEnvironment: Sendable {
    let variables: [String: String]

    init(_ variables: [String: String] = ProcessInfo.processInfo.environment) { self.variables = variables }

    /// The first of `names` that is set, even to "" (libcurl's `curl_getenv` order: a set but empty
    /// lower-case variable hides the upper-case one).
    private func value(_ names: String...) -> String? {
        names.lazy.compactMap { self.variables[$0] }.first
    }

    /// The proxy for `url`, or nil for a direct connection (an empty proxy variable means none).
    func proxy(for url: URLParts) -> String? {
        let proxy = (url.scheme == "https" ? value("https_proxy", "HTTPS_PROXY") : value("http_proxy")) ?? value("all_proxy", "ALL_PROXY")
        guard let proxy, !proxy.isEmpty else { return nil }
        let noProxy = value("no_proxy", "NO_PROXY") ?? ""
        return Self.excluded(host: url.host, by: noProxy) ? nil : proxy
    }

    static func excluded(host rawHost: String, by list: String) -> Bool {
        var host = rawHost.lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let address = IPAddress(literal: host)
        for raw in list.split(separator: ",") {
            var entry = raw.trimmingCharacters(in: .whitespaces).lowercased()
            if entry == "*" { return true }
            if entry.hasPrefix("["), entry.hasSuffix("]") { entry = String(entry.dropFirst().dropLast()) }
            if let address {
                if let slash = entry.firstIndex(of: "/"), let bits = Int(entry[entry.index(after: slash)...]),
                   let net = IPAddress(literal: String(entry[..<slash])) {
                    if Self.within(address, net, bits: bits) { return true }
                } else if IPAddress(literal: entry) == address {
                    return true
                }
                continue
            }
            while entry.hasPrefix(".") { entry.removeFirst() }
            if entry.hasSuffix(".") { entry.removeLast() }
            if !entry.isEmpty, host == entry || host.hasSuffix("." + entry) { return true }
        }
        return false
    }

    private static func within(_ a: IPAddress, _ net: IPAddress, bits: Int) -> Bool {
        switch (a, net) {
        case (.v4(let x), .v4(let n)):
            guard (0...32).contains(bits) else { return false }
            return bits == 0 || x >> (32 - bits) == n >> (32 - bits)
        case (.v6(let x), .v6(let n)):
            guard (0...128).contains(bits) else { return false }
            for i in 0..<16 {
                let keep = min(8, max(0, bits - i * 8))
                let mask: UInt8 = keep == 0 ? 0 : ~UInt8(0) << (8 - keep)
                if x[i] & mask != n[i] & mask { return false }
            }
            return true
        default: return false
        }
    }
}
