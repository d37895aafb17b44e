/// The `AddressPolicy` decision for one transfer, applied by `CurlTransfer` on the address libcurl actually
/// connects to, so a name that resolves (or re-resolves: DNS rebinding) to a forbidden address is refused:
///
/// - `CURLOPT_OPENSOCKETFUNCTION` sees every resolved address before its socket exists; a refused one gets no
///   socket, so not one packet is sent to it.
/// - `CURLOPT_PREREQFUNCTION` sees the address of the connection a request is about to use — new or taken
///   from the shared pool — before the request is sent. The pool is keyed by host and port, not by policy, so
///   a connection opened under a looser rule (a configured endpoint's own origin) could otherwise be reused
///   by a stricter one (a redirect to the same host, an ad-hoc registry of that name).
///
/// Through a proxy both callbacks only see the proxy (configured by the operator, always allowed) and the proxy
/// resolves names, so only what the name itself shows is checked (IP literals, `localhost`).
final class AddressGate: @unchecked Sendable {
    let policy: AddressPolicy
    /// The host asked for (URL host), for messages and logs.
    let host: String
    let ownOrigin: Bool
    let endpointClass: AddressClass?
    /// The proxy libcurl is told to use, or nil for a direct connection.
    let proxy: String?

    /// Set on the transfer thread, read after the transfer ends.
    private(set) var refused: (address: String, reason: String)?
    /// The address the request went to (nil through a proxy, or before connecting).
    private(set) var connected: IPAddress?

    init(policy: AddressPolicy, url: URLParts, ownOrigin: Bool, endpointClass: AddressClass?, proxy: String?) {
        self.policy = policy
        host = url.host
        self.ownOrigin = ownOrigin
        self.endpointClass = endpointClass
        self.proxy = proxy
    }

    /// Before any connection: through a proxy, the name is all there is to check.
    /// - Returns: false (and `refused` set) when the transfer must not start.
    func allowsStart() -> Bool {
        guard proxy != nil, let cls = addressClass(ofHost: host) else { return true }
        return check(cls, shown: host)
    }

    /// A resolved address libcurl wants to open a socket to, or the address of the connection it will use.
    func allows(_ address: IPAddress) -> Bool {
        if proxy != nil { return true }
        guard check(address.addressClass, shown: address.description) else { return false }
        connected = address
        return true
    }

    private func check(_ cls: AddressClass, shown: String) -> Bool {
        guard let reason = policy.refusal(target: cls, ownOrigin: ownOrigin, endpoint: endpointClass) else { return true }
        if refused == nil { refused = (shown, reason) }
        return false
    }

    /// The error for a refused transfer: names the host asked for and the address, never the URL (signed).
    var error: UpstreamError? {
        refused.map { .refusedAddress(($0.address == host ? host : "\(host) (\($0.address))") + ": " + $0.reason) }
    }
}
