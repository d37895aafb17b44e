import Access
import Hummingbird
import Mirror
import NIOCore
import OCI

extension RegistryResponder {
    /// `route` behind the access gate: authenticates the client (401 with the Basic challenge when it may not
    /// proceed) and, for an anonymous client under `anonymous: cached`, answers from the cache only. A miss
    /// there becomes 401 with the challenge rather than 404, so a client holding credentials retries with them.
    /// The authenticated user name goes into `record` for the access line.
    func admittedRoute(_ request: Request, channel: any Channel, record: AccessRecord) async throws -> Response {
        let admission = try await access.admit(path: request.uri.path, authorization: request.headers[.authorization])
        record.user = admission.client.name
        guard admission.cacheOnly else { return try await route(request, channel: channel) }
        do {
            return try await Mirror.$cacheOnlyRequest.withValue(true) { try await route(request, channel: channel) }
        } catch let e as DistributionError where [.manifestUnknown, .blobUnknown, .nameUnknown].contains(e.code) {
            throw ClientAccess.unauthorized("not cached: anonymous clients may read only what this mirror holds; authenticate to fetch from the upstream")
        }
    }
}
