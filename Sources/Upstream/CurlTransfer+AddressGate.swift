import CCurl
#if canImport(Glibc)
import Glibc
#endif

extension CurlTransfer {
    /// Puts `gate` on the address of every socket the transfer opens and every connection it uses (see
    /// `AddressGate` for why both), and tells libcurl the proxy decision the gate was made with.
    static func install(_ gate: AddressGate, on h: UnsafeMutableRawPointer) {
        // The gate outlives the transfer: `CurlTransfer` holds it until `perform` returns.
        let data = Unmanaged.passUnretained(gate).toOpaque()
        cove_curl_setopt_ptr(h, CURLOPT_PROXY, gate.proxy ?? "")
        if gate.proxy != nil { cove_curl_setopt_ptr(h, CURLOPT_NOPROXY, "") }
        cove_curl_setopt_ptr(h, CURLOPT_OPENSOCKETDATA, data)
        cove_curl_setopt_opensocket(h) { user, _, address in
            guard let user, let address else { return -1 }
            let gate = Unmanaged<AddressGate>.fromOpaque(user).takeUnretainedValue()
            let offset = MemoryLayout<curl_sockaddr>.offset(of: \curl_sockaddr.addr)!
            let raw = UnsafeRawPointer(address) + offset
            guard let ip = IPAddress(sockaddr: raw, length: Int(address.pointee.addrlen)), gate.allows(ip) else {
                return -1 // CURL_SOCKET_BAD: no socket, no packet
            }
            return socket(address.pointee.family, address.pointee.socktype, address.pointee.protocol)
        }
        cove_curl_setopt_ptr(h, CURLOPT_PREREQDATA, data)
        cove_curl_setopt_prereq(h) { user, primaryIP, _, _, _ in
            guard let user, let primaryIP else { return 1 }
            let gate = Unmanaged<AddressGate>.fromOpaque(user).takeUnretainedValue()
            if gate.proxy != nil { return 0 }
            guard let ip = IPAddress(literal: String(cString: primaryIP)), gate.allows(ip) else { return 1 } // CURL_PREREQFUNC_ABORT
            return 0
        }
    }
}
