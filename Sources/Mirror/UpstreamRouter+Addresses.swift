import Logging
import OCI
import Upstream

extension UpstreamRouter {
    /// Refuses an ad-hoc registry (`allow_any_registry`) whose name shows a non-public address — an IP literal
    /// (`127.0.0.1:5000`, `10.1.2.3`, `2130706433`) or `localhost` — before any upstream work. Names that
    /// merely resolve to such an address are refused when libcurl connects (`AddressGate`).
    /// - Parameter name: `host[:port]`, already checked by `looksLikeHost` (no IPv6 literals reach here).
    /// - Throws: `DENIED` (403) naming the registry.
    func refuseNonPublicAdHoc(_ name: String) throws(DistributionError) {
        let host = name.lastIndex(of: ":").map { String(name[..<$0]) } ?? name
        guard let cls = addressClass(ofHost: host) else { return }
        var policy = adHocTemplate.addressPolicy
        policy.scope = .publicOnly
        guard policy.refusal(target: cls, ownOrigin: true, endpoint: nil) != nil else { return }
        logger.notice("refused a registry named by a client on a non-public address (SSRF rules)", metadata: [
            "registry": "\(name)", "address_class": "\(cls.rawValue)",
        ])
        throw DistributionError(.denied, "registry \(name) is on a \(cls.rawValue) address: registries named by clients must be on public addresses")
    }
}
