import Logging

extension UpstreamClient {
    /// The proxy variables of this process, read once (libcurl would read them per transfer; they do not change).
    static let proxyEnvironment = ProxyEnvironment()

    /// The address rules for a request to `url` (see `AddressPolicy`): own origin or not, and the class of
    /// the endpoint's own address — learned from its last connection, or from its URL when that names an IP.
    func addressGate(for url: String) -> AddressGate? {
        guard let parts = URLParts(url), let endpoint = URLParts(configuration.url) else { return nil }
        let known = endpointAddressClass.withLock { $0 } ?? addressClass(ofHost: endpoint.host)
        return AddressGate(policy: configuration.addressPolicy, url: parts, ownOrigin: parts.sameOrigin(endpoint),
                           endpointClass: known, proxy: Self.proxyEnvironment.proxy(for: parts))
    }

    /// Runs `transfer`; learns the endpoint's address class from a connection to its own origin, and logs a
    /// refusal by the address rules with the host asked for (`asked`: the URL the request started from).
    func runGated(_ transfer: CurlTransfer, asked: String) async throws(UpstreamError) -> (ResponseHead, [UInt8]) {
        do {
            let result = try await transfer.run()
            if let gate = transfer.addressGate, gate.ownOrigin, let address = gate.connected {
                endpointAddressClass.withLock { $0 = address.addressClass }
            }
            return result
        } catch {
            if case .refusedAddress(let why) = error, let gate = transfer.addressGate {
                logger.error("refused an upstream connection by the address rules (SSRF)", metadata: [
                    "host": "\(gate.host)", "endpoint": "\(configuration.url)",
                    "started_at": "\(URLParts(asked)?.origin ?? "?")", "reason": "\(why)",
                ])
            }
            throw error
        }
    }
}
