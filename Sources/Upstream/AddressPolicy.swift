/// Which addresses an upstream client may connect to: Cove's defence against server-side request forgery
/// (an upstream, or a client naming a registry, steering Cove at its own host or internal network).
///
/// Rules (checked on the address each connection actually uses, see `AddressGate`):
/// - A configured endpoint may always reach its own origin (the operator chose it).
/// - Another origin — a redirect target (CDN) or a token realm — must be public, unless the endpoint itself
///   is on a non-public address and the target is in reach of it anyway: same class as the endpoint (a
///   registry on 10.x redirecting to storage on 10.y), or any class when the endpoint is on loopback (software
///   on Cove's own host can already reach everything Cove can).
/// - Registries created on demand (`allow_any_registry`) reach public addresses only, their own origin too.
public struct AddressPolicy: Sendable, Equatable {
    /// Configured endpoints (`configured`) or registries named by clients (`publicOnly`).
    public enum Scope: Sendable, Equatable { case configured, publicOnly }
    /// The rule set applied; `UpstreamRouter` sets `.publicOnly` on the registries it creates.
    public var scope: Scope

    /// Tests only: the class assumed for the endpoint instead of the one learned from its connections (a
    /// "public" endpoint cannot be simulated on loopback otherwise).
    public var assumedEndpointClass: AddressClass?
    /// Tests only: classes treated as public (loopback standing in for the internet).
    public var treatedAsPublic: Set<AddressClass>

    public init(scope: Scope = .configured, assumedEndpointClass: AddressClass? = nil, treatedAsPublic: Set<AddressClass> = []) {
        self.scope = scope
        self.assumedEndpointClass = assumedEndpointClass
        self.treatedAsPublic = treatedAsPublic
    }

    /// Configured endpoints: the default.
    public static let configured = AddressPolicy()

    /// `address`'s class as this policy sees it (after `treatedAsPublic`).
    public func effectiveClass(_ c: AddressClass) -> AddressClass { treatedAsPublic.contains(c) ? .publicAddress : c }

    /// Whether a connection may go to an address of class `target`.
    /// - Parameters:
    ///   - ownOrigin: the request is to the endpoint's own origin (scheme, host, port of its URL).
    ///   - endpoint: the endpoint's class, from the address its own connections used (nil: not known yet,
    ///     treated as public, the strictest case).
    /// - Returns: nil to connect, or why not (for logs and the client's error).
    public func refusal(target: AddressClass, ownOrigin: Bool, endpoint: AddressClass?) -> String? {
        let target = effectiveClass(target)
        if target.isPublic { return nil }
        switch scope {
        case .publicOnly:
            return "\(target.rawValue) address (registries named by clients must be on public addresses)"
        case .configured:
            if ownOrigin { return nil }
            let endpoint = effectiveClass(assumedEndpointClass ?? endpoint ?? .publicAddress)
            if endpoint == .loopback || endpoint == target { return nil }
            return "\(target.rawValue) address, and the endpoint is on a \(endpoint.rawValue) address"
        }
    }
}
