import Foundation
import Testing
@testable import Upstream
#if canImport(Glibc)
import Glibc
#endif

/// The SSRF address rules as pure functions: which class an address is in, and whether a connection may go there.
@Suite("Address classes and the SSRF decision")
struct AddressPolicyTests {
    static let literals: [(String, AddressClass)] = [
        ("127.0.0.1", .loopback), ("127.255.255.254", .loopback), ("127.1", .loopback), ("2130706433", .loopback),
        ("0x7f.0.0.1", .loopback), ("0177.0.0.1", .loopback), ("0x7f000001", .loopback),
        ("10.0.0.1", .privateNetwork), ("172.16.0.1", .privateNetwork), ("172.31.255.255", .privateNetwork),
        ("192.168.1.1", .privateNetwork), ("172.15.255.255", .publicAddress), ("172.32.0.1", .publicAddress),
        ("169.254.169.254", .linkLocal), ("169.253.0.1", .publicAddress), ("100.64.0.1", .sharedNAT),
        ("100.127.255.255", .sharedNAT), ("100.128.0.1", .publicAddress), ("0.0.0.0", .special), ("0.1.2.3", .special),
        ("224.0.0.1", .special), ("239.255.255.250", .special), ("240.0.0.1", .special), ("255.255.255.255", .special),
        ("192.0.2.1", .special), ("198.18.0.1", .special), ("8.8.8.8", .publicAddress), ("11.0.0.1", .publicAddress),
        ("::1", .loopback), ("[::1]", .loopback), ("::", .special), ("fe80::1", .linkLocal), ("fe80::1%eth0", .linkLocal),
        ("febf::1", .linkLocal), ("fec0::1", .special), ("fc00::1", .privateNetwork), ("fd12:3456::1", .privateNetwork),
        ("ff02::1", .special), ("::ffff:127.0.0.1", .loopback), ("::ffff:10.0.0.1", .privateNetwork),
        ("::ffff:169.254.169.254", .linkLocal), ("::ffff:8.8.8.8", .publicAddress), ("64:ff9b::a9fe:a9fe", .linkLocal),
        ("64:ff9b::7f00:1", .loopback), ("64:ff9b::808:808", .publicAddress), ("::127.0.0.1", .loopback),
        ("2606:4700:4700::1111", .publicAddress), ("2001:db8::1", .special), ("100::1", .special), ("4000::1", .special),
    ]

    @Test(arguments: literals) func literalIsClassified(_ literal: String, _ expected: AddressClass) throws {
        let address = try #require(IPAddress(literal: literal), "\(literal) parses")
        #expect(address.addressClass == expected, "\(literal) → \(address)")
        #expect(addressClass(ofHost: literal) == expected)
    }

    @Test func namesAreNotLiteralsExceptLocalhost() {
        for name in ["registry-1.docker.io", "deadbeef", "1e100.net", "ghcr.io", "a.b", "localhost.example.com"] {
            #expect(IPAddress(literal: name) == nil, "\(name)")
            #expect(addressClass(ofHost: name) == nil, "\(name)")
        }
        for name in ["localhost", "LOCALHOST", "registry.localhost"] { #expect(addressClass(ofHost: name) == .loopback, "\(name)") }
    }

    @Test func socketAddressesAreReadAsLibcurlPassesThem() throws {
        var v4 = sockaddr_in()
        v4.sin_family = sa_family_t(AF_INET)
        v4.sin_addr.s_addr = inet_addr("10.1.2.3")
        let a = try #require(withUnsafeBytes(of: &v4) { IPAddress(sockaddr: $0.baseAddress!, length: $0.count) })
        #expect(a == .v4(0x0A01_0203) && a.addressClass == .privateNetwork && a.description == "10.1.2.3")
        var v6 = sockaddr_in6()
        v6.sin6_family = sa_family_t(AF_INET6)
        _ = inet_pton(AF_INET6, "fe80::1", &v6.sin6_addr)
        let b = try #require(withUnsafeBytes(of: &v6) { IPAddress(sockaddr: $0.baseAddress!, length: $0.count) })
        #expect(b.addressClass == .linkLocal && b.description == "fe80::1")
        // Truncated buffers and other families are not addresses.
        #expect(withUnsafeBytes(of: &v6) { IPAddress(sockaddr: $0.baseAddress!, length: 16) } == nil)
        var unix = sockaddr_un()
        unix.sun_family = sa_family_t(AF_UNIX)
        #expect(withUnsafeBytes(of: &unix) { IPAddress(sockaddr: $0.baseAddress!, length: $0.count) } == nil)
    }

    /// (policy, own origin?, endpoint class, target class) → allowed?
    static let decisions: [(AddressPolicy, Bool, AddressClass?, AddressClass, Bool)] = [
        // Configured endpoints reach their own origin wherever it is.
        (.configured, true, nil, .loopback, true), (.configured, true, .publicAddress, .linkLocal, true),
        // Other origins (CDN redirects, token realms) must be public for a public or not-yet-known endpoint.
        (.configured, false, .publicAddress, .publicAddress, true), (.configured, false, .publicAddress, .privateNetwork, false),
        (.configured, false, .publicAddress, .loopback, false), (.configured, false, .publicAddress, .linkLocal, false),
        (.configured, false, .publicAddress, .special, false), (.configured, false, .publicAddress, .sharedNAT, false),
        (.configured, false, nil, .privateNetwork, false), (.configured, false, nil, .publicAddress, true),
        // ... unless the endpoint is in the same kind of network, or on Cove's own host.
        (.configured, false, .privateNetwork, .privateNetwork, true), (.configured, false, .privateNetwork, .loopback, false),
        (.configured, false, .privateNetwork, .linkLocal, false), (.configured, false, .linkLocal, .linkLocal, true),
        (.configured, false, .loopback, .loopback, true), (.configured, false, .loopback, .privateNetwork, true),
        (.configured, false, .loopback, .linkLocal, true),
        // Registries named by clients: public only, their own origin included.
        (.init(scope: .publicOnly), true, nil, .loopback, false), (.init(scope: .publicOnly), true, .loopback, .loopback, false),
        (.init(scope: .publicOnly), false, .loopback, .privateNetwork, false), (.init(scope: .publicOnly), true, nil, .publicAddress, true),
        (.init(scope: .publicOnly), true, nil, .special, false),
        // Test overrides: an assumed public endpoint; loopback standing in for the internet.
        (.init(assumedEndpointClass: .publicAddress), false, .loopback, .loopback, false),
        (.init(assumedEndpointClass: .publicAddress), true, .loopback, .loopback, true),
        (.init(scope: .publicOnly, treatedAsPublic: [.loopback]), true, nil, .loopback, true),
        (.init(scope: .publicOnly, treatedAsPublic: [.loopback]), true, nil, .privateNetwork, false),
    ]

    @Test(arguments: decisions) func decision(_ policy: AddressPolicy, _ own: Bool, _ endpoint: AddressClass?, _ target: AddressClass, _ allowed: Bool) {
        let refusal = policy.refusal(target: target, ownOrigin: own, endpoint: endpoint)
        #expect((refusal == nil) == allowed, "\(policy.scope) own=\(own) endpoint=\(endpoint?.rawValue ?? "nil") target=\(target.rawValue): \(refusal ?? "allowed")")
        if let refusal { #expect(refusal.contains(policy.effectiveClass(target).rawValue)) }
    }

    @Test func proxyChoiceFollowsLibcurlsVariables() throws {
        let https = try #require(URLParts("https://registry.example.com/v2/")), http = try #require(URLParts("http://registry.example.com/"))
        #expect(ProxyEnvironment(["HTTPS_PROXY": "http://p:3128"]).proxy(for: https) == "http://p:3128")
        #expect(ProxyEnvironment(["https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"]).proxy(for: https) == "http://a:1")
        // libcurl ignores upper-case HTTP_PROXY (CGI's HTTP_* headers would set it).
        #expect(ProxyEnvironment(["HTTP_PROXY": "http://p:3128"]).proxy(for: http) == nil)
        #expect(ProxyEnvironment(["http_proxy": "http://p:3128"]).proxy(for: http) == "http://p:3128")
        #expect(ProxyEnvironment(["ALL_PROXY": "socks5://p:1080"]).proxy(for: http) == "socks5://p:1080")
        #expect(ProxyEnvironment(["all_proxy": "http://q:1"]).proxy(for: https) == "http://q:1")
        // Set but empty: no proxy, and no fallback to the next variable (libcurl's reading).
        #expect(ProxyEnvironment(["https_proxy": "", "HTTPS_PROXY": "http://b:2", "all_proxy": "http://q:1"]).proxy(for: https) == nil)
        #expect(ProxyEnvironment(["HTTPS_PROXY": "http://p:1", "no_proxy": "", "NO_PROXY": "registry.example.com"]).proxy(for: https) != nil)
        #expect(ProxyEnvironment([:]).proxy(for: https) == nil)
        for noProxy in ["example.com", ".example.com", "registry.example.com", "other.org, example.com", "*"] {
            #expect(ProxyEnvironment(["HTTPS_PROXY": "http://p:1", "NO_PROXY": noProxy]).proxy(for: https) == nil, "\(noProxy)")
        }
        for noProxy in ["ample.com", "other.example.com", "10.0.0.0/8"] {
            #expect(ProxyEnvironment(["HTTPS_PROXY": "http://p:1", "no_proxy": noProxy]).proxy(for: https) != nil, "\(noProxy)")
        }
        #expect(ProxyEnvironment.excluded(host: "10.1.2.3", by: "10.0.0.0/8"))
        #expect(!ProxyEnvironment.excluded(host: "11.1.2.3", by: "10.0.0.0/8"))
        #expect(ProxyEnvironment.excluded(host: "127.0.0.1", by: "localhost,127.0.0.1"))
        #expect(ProxyEnvironment.excluded(host: "[::1]", by: "::1"))
        #expect(ProxyEnvironment.excluded(host: "[fd00::5]", by: "fd00::/8"))
        #expect(!ProxyEnvironment.excluded(host: "[fe80::5]", by: "fd00::/8"))
    }
}
