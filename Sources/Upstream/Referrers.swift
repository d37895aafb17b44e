import OCI

extension UpstreamClient {
    /// GET `/v2/<name>/referrers/<digest>` with an already-encoded query (`artifactType`, pagination), body
    /// buffered (≤ `manifestSizeLimit` bytes). OCI distribution spec 1.1, "Listing Referrers".
    /// - Throws: `UpstreamError`; a registry without the API answers 404.
    public func referrers(_ name: RepositoryName, _ subject: Digest, query: String, deadline: Deadline = .none) async throws(UpstreamError) -> UpstreamResponse {
        try await send(method: "GET", path: "/v2/\(name.value)/referrers/\(subject)" + (query.isEmpty ? "" : "?" + query), scope: name,
                       headers: [("Accept", MediaType.ociIndex)], sink: nil, bufferLimit: Self.manifestSizeLimit,
                       limits: configuration.requestLimits(within: deadline))
    }
}

extension RegistryClient {
    /// The referrers of `subject`, from endpoints trusted to resolve tags only: like a tag, the list changes
    /// over time and cannot be verified against a digest. Bounded by one operation deadline (`request_timeout`).
    /// - Throws: `UpstreamError`.
    public func referrers(_ name: RepositoryName, _ subject: Digest, query: String) async throws(UpstreamError) -> UpstreamResponse {
        try await failover(trustedOnly: true, path: "/v2/\(name.value)/referrers/\(subject)", object: nil,
                           deadline: operationDeadline()) { (c, d) throws(UpstreamError) in try await c.referrers(name, subject, query: query, deadline: d) }
    }
}
