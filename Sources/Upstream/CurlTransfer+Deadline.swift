import CCurl

extension CurlTransfer {
    /// Aborts the exchange when no response head arrived `seconds` from now (blob GETs, whose body may take
    /// longer than any total timeout). libcurl calls the progress callback about once a second while idle, so
    /// the bound holds to within a second.
    func watchHead(_ h: UnsafeMutableRawPointer, seconds: Double, me: UnsafeMutableRawPointer) {
        headBy = .now + .milliseconds(Int64((seconds * 1000).rounded()))
        cove_curl_setopt_ptr(h, CURLOPT_XFERINFODATA, me)
        cove_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
        cove_curl_setopt_xferinfo(h) { user, _, _, _, _ in
            let t = Unmanaged<CurlTransfer>.fromOpaque(user!).takeUnretainedValue()
            guard t.head == nil, let by = t.headBy, ContinuousClock.now >= by else { return 0 }
            t.headTimedOut = true
            return 1
        }
    }

    /// A transport error that names the origin it happened with (`host:port`): libcurl's own text
    /// ("Operation timed out after 10000 milliseconds") names none, and a client needs to know which leg
    /// (registry, token realm, CDN) stalled.
    func transportFailure(_ message: String, code: Int) -> UpstreamError {
        let origin = URLParts(url).map { "\($0.host):\($0.effectivePort)" } ?? "upstream"
        return .transport("\(origin): \(message)", code: code)
    }

    /// Seconds rounded for a message (e.g. 2.5).
    static func seconds(_ s: Double) -> String {
        let r = (s * 10).rounded() / 10
        return r == r.rounded() ? String(Int(r)) : String(r)
    }
}
