import Foundation
import OCI
import Upstream

extension DistributionError {
    /// Maps an upstream failure to what Cove answers its client (registry JSON error envelope).
    ///
    /// - 404 keeps the upstream's error code when it is a spec code, else `notFound`.
    /// - 401/403 become 403 `DENIED`: Cove's own client is not the one who must authenticate.
    /// - 429 stays 429 `TOOMANYREQUESTS`, with the upstream's `Retry-After`.
    /// - A connection refused by the address rules (SSRF) becomes 502 `UNAVAILABLE` naming the host.
    /// - Other failures (5xx, connection errors, auth flow errors) become 503 `UNAVAILABLE`.
    static func from(_ error: UpstreamError, notFound: DistributionErrorCode, subject: String) -> DistributionError {
        switch error {
        case .status(let head, let body):
            switch head.status {
            case 404:
                let code = upstreamCode(body).flatMap(DistributionErrorCode.init(rawValue:)) ?? notFound
                let known: Set<DistributionErrorCode> = [.manifestUnknown, .blobUnknown, .nameUnknown]
                return DistributionError(known.contains(code) ? code : notFound, "\(subject) not found upstream")
            case 401, 403:
                return DistributionError(.denied, "upstream denied access to \(subject) (are credentials for this upstream configured?)", status: 403)
            case 429:
                let retry = head["Retry-After"].map { [("Retry-After", $0)] } ?? []
                return DistributionError(.tooManyRequests, "upstream rate limit reached fetching \(subject)", headers: retry)
            case 400..<500:
                let code = upstreamCode(body).flatMap(DistributionErrorCode.init(rawValue:)) ?? .unknown
                return DistributionError(code, "upstream refused \(subject) with status \(head.status)", status: head.status)
            default:
                // Keep the upstream's own explanation (another Cove tier names the endpoint that failed there).
                let detail = upstreamMessage(body).map { ": " + String($0.prefix(300)) } ?? ""
                return DistributionError(.unavailable, "upstream answered \(head.status) for \(subject)\(detail)")
            }
        case .refusedAddress(let why):
            return DistributionError(.unavailable, "\(subject): upstream address refused: \(why)", status: 502)
        case .invalidContent(let why):
            return DistributionError(.unavailable, "\(subject): no upstream endpoint sent a valid answer (\(why))", status: 502)
        default:
            return DistributionError(.unavailable, "\(subject): \(error)")
        }
    }

    private static func upstreamMessage(_ body: [UInt8]) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let errors = json["errors"] as? [[String: Any]] else { return nil }
        return errors.first?["message"] as? String
    }

    private static func upstreamCode(_ body: [UInt8]) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
              let errors = json["errors"] as? [[String: Any]] else { return nil }
        return errors.first?["code"] as? String
    }
}
