#if canImport(Glibc)
import Glibc
#endif

/// What kind of network an IP address belongs to, for the SSRF rules (`AddressPolicy`).
///
/// Ranges: IANA IPv4/IPv6 special-purpose address registries (RFC 6890 and successors).
public enum AddressClass: String, Sendable, Hashable, CaseIterable {
    /// Globally routable: the internet.
    case publicAddress = "public"
    /// 127.0.0.0/8, ::1 — Cove's own host.
    case loopback
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918), fc00::/7 (RFC 4193 unique local).
    case privateNetwork = "private"
    /// 169.254/16 (RFC 3927; cloud metadata services live here), fe80::/10.
    case linkLocal = "link-local"
    /// 100.64/10, carrier-grade NAT shared space (RFC 6598; also Tailscale's range).
    case sharedNAT = "shared-nat"
    /// Anything else that is not a unicast internet host: 0/8 and `::` (on Linux 0.0.0.0 reaches loopback),
    /// multicast (224/4, ff00::/8), reserved 240/4 and broadcast, documentation and benchmarking ranges,
    /// 192.0.0/24, site-local fec0::/10, discard 100::/64.
    case special

    /// True for `.publicAddress`.
    public var isPublic: Bool { self == .publicAddress }
}

/// An IPv4 or IPv6 address, parsed from a socket address or a literal.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// Host-order IPv4 address.
    case v4(UInt32)
    /// The 16 bytes of an IPv6 address, network order.
    case v6([UInt8])

    /// Parses a literal: IPv6 (with or without `[]`, a `%zone` suffix is ignored) or IPv4 in any form the
    /// system resolver accepts (`inet_aton`: `127.1`, `0x7f.0.0.1`, `2130706433`), because that is how libcurl
    /// would read the same name. Nil when `s` is not an IP literal (a host name).
    public init?(literal s: String) {
        var text = s
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        if let percent = text.firstIndex(of: "%") { text = String(text[..<percent]) }
        if text.contains(":") {
            var a6 = in6_addr()
            guard inet_pton(AF_INET6, text, &a6) == 1 else { return nil }
            self = .v6(withUnsafeBytes(of: &a6) { Array($0) })
            return
        }
        // inet_aton accepts what getaddrinfo does for numeric hosts; it must be all digits, dots and hex.
        guard !text.isEmpty, text.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == "x" || $0 == "X" }),
              text.first!.isNumber else { return nil }
        var a4 = in_addr()
        guard inet_aton(text, &a4) != 0 else { return nil }
        self = .v4(UInt32(bigEndian: a4.s_addr))
    }

    /// Reads an `AF_INET`/`AF_INET6` socket address; nil for any other family or a short buffer.
    /// - Parameters: `sa` points at a `sockaddr` of `length` bytes (as libcurl's `curl_sockaddr.addr`).
    public init?(sockaddr sa: UnsafeRawPointer, length: Int) {
        let family = sa.load(as: sockaddr.self).sa_family
        if Int32(family) == AF_INET, length >= MemoryLayout<sockaddr_in>.size {
            self = .v4(UInt32(bigEndian: sa.loadUnaligned(as: sockaddr_in.self).sin_addr.s_addr))
        } else if Int32(family) == AF_INET6, length >= MemoryLayout<sockaddr_in6>.size {
            var a = sa.loadUnaligned(as: sockaddr_in6.self).sin6_addr
            self = .v6(withUnsafeBytes(of: &a) { Array($0) })
        } else {
            return nil
        }
    }

    /// Dotted quad, or RFC 5952 text for IPv6 (`inet_ntop`).
    public var description: String {
        switch self {
        case .v4(let a): return "\(a >> 24).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)"
        case .v6(let b):
            var a6 = in6_addr()
            withUnsafeMutableBytes(of: &a6) { $0.copyBytes(from: b) }
            var out = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            guard inet_ntop(AF_INET6, &a6, &out, socklen_t(out.count)) != nil else { return "?" }
            return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    /// The address's class. IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64
    /// `64:ff9b::/96`, IPv4-compatible `::a.b.c.d`) are classified by that IPv4 address, because that is where
    /// the packets go.
    public var addressClass: AddressClass {
        switch self {
        case .v4(let a): return Self.classify(v4: a)
        case .v6(let b): return Self.classify(v6: b)
        }
    }

    static func classify(v4 a: UInt32) -> AddressClass {
        func within(_ net: UInt32, _ bits: UInt32) -> Bool { bits == 0 || a >> (32 - bits) == net >> (32 - bits) }
        if within(0x7F00_0000, 8) { return .loopback }
        if within(0x0A00_0000, 8) || within(0xAC10_0000, 12) || within(0xC0A8_0000, 16) { return .privateNetwork }
        if within(0xA9FE_0000, 16) { return .linkLocal }
        if within(0x6440_0000, 10) { return .sharedNAT }
        let special: [(UInt32, UInt32)] = [
            (0x0000_0000, 8),   // "this network"; 0.0.0.0 connects to loopback on Linux
            (0xC000_0000, 24),  // IETF protocol assignments
            (0xC000_0200, 24), (0xC633_6400, 24), (0xCB00_7100, 24),  // documentation (TEST-NET-1/2/3)
            (0xC612_0000, 15),  // benchmarking
            (0xE000_0000, 4),   // multicast
            (0xF000_0000, 4),   // reserved, including 255.255.255.255 broadcast
        ]
        if special.contains(where: { within($0.0, $0.1) }) { return .special }
        return .publicAddress
    }

    static func classify(v6 b: [UInt8]) -> AddressClass {
        guard b.count == 16 else { return .special }
        let embedded = UInt32(b[12]) << 24 | UInt32(b[13]) << 16 | UInt32(b[14]) << 8 | UInt32(b[15])
        let first10Zero = b[0..<10].allSatisfy { $0 == 0 }
        if first10Zero, b[10] == 0xFF, b[11] == 0xFF { return classify(v4: embedded) }          // ::ffff:a.b.c.d
        if b[0..<12] == [0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0] { return classify(v4: embedded) } // 64:ff9b::/96
        if first10Zero, b[10] == 0, b[11] == 0 {
            if embedded == 1 { return .loopback }   // ::1
            if embedded == 0 { return .special }    // ::
            return classify(v4: embedded)           // deprecated IPv4-compatible ::a.b.c.d
        }
        if b[0] & 0xFE == 0xFC { return .privateNetwork }              // fc00::/7
        if b[0] == 0xFE, b[1] & 0xC0 == 0x80 { return .linkLocal }     // fe80::/10
        if b[0] == 0xFE, b[1] & 0xC0 == 0xC0 { return .special }       // fec0::/10 site-local (deprecated)
        if b[0] == 0xFF { return .special }                            // multicast
        if b[0] == 0x20, b[1] == 0x01, b[2] == 0x0D, b[3] == 0xB8 { return .special } // 2001:db8::/32 documentation
        if b[0..<8] == [1, 0, 0, 0, 0, 0, 0, 0] { return .special }    // 100::/64 discard
        // Global unicast is 2000::/3; anything outside it is unassigned.
        return b[0] & 0xE0 == 0x20 ? .publicAddress : .special
    }
}

/// How a host name is classified before any connection: IP literals by their address, `localhost` and
/// `*.localhost` (RFC 6761: always loopback) as loopback, other names unknown (nil) until resolved.
public func addressClass(ofHost host: String) -> AddressClass? {
    let h = host.lowercased()
    if h == "localhost" || h.hasSuffix(".localhost") || h == "localhost." { return .loopback }
    return IPAddress(literal: h)?.addressClass
}
