import Foundation
import OCI

/// What `cove probe` learned about one endpoint.
public struct ProbeReport: Sendable {
    public var endpoint: String
    /// `HTTP <status>` of the unauthenticated `GET /v2/`, or the connection error.
    public var reachable: String
    /// The auth scheme the endpoint asked for and whether Cove could satisfy it.
    public var auth: String
    /// Result of `HEAD /v2/<repository>/manifests/<reference>`, if a repository was probed.
    public var manifest: String
    /// The rate-limit headers last seen, if any.
    public var rateLimit: String
    /// Host a blob GET was redirected to (a CDN), `none`, or why it was not checked.
    public var blobRedirect: String
    /// Wall time of the whole probe, in milliseconds.
    public var milliseconds: Int
}

extension UpstreamClient {
    /// Checks the endpoint step by step: reachability, the auth flow, a manifest HEAD (rate-limit headers) and
    /// where a blob GET is redirected. Never throws: every failure is reported in its column.
    public func probe(repository: RepositoryName?, reference: Reference) async -> ProbeReport {
        let start = ContinuousClock.now
        var report = ProbeReport(endpoint: configuration.url, reachable: "-", auth: "-", manifest: "-", rateLimit: "-", blobRedirect: "-", milliseconds: 0)
        do {
            let ping = try await follow(method: "GET", url: configuration.url + "/v2/", headers: [], authorization: nil, sink: nil,
                                        bufferLimit: 64 * 1024, limits: configuration.requestLimits)
            report.reachable = "HTTP \(ping.head.status)"
            let challenges = ping.head.values("WWW-Authenticate").flatMap(AuthChallenge.parse)
            if ping.head.status == 401 {
                let scheme = challenges.first?.scheme ?? "unknown"
                do {
                    _ = try await self.ping()
                    let realm = challenges.first?.realm.flatMap { URLParts($0)?.host }.map { " (realm \($0))" } ?? ""
                    report.auth = "\(scheme) ok" + realm + (configuration.credentials == nil ? ", anonymous" : ", \(configuration.credentials!.username)")
                } catch {
                    report.auth = "\(scheme) failed: \(Self.short(error))"
                }
            } else {
                report.auth = "none needed"
            }
        } catch {
            report.reachable = "no: \(Self.short(error))"
            report.milliseconds = Self.ms(since: start)
            return report
        }
        guard let repository else {
            report.manifest = "skipped (give --repository)"
            report.blobRedirect = "skipped"
            report.milliseconds = Self.ms(since: start)
            return report
        }
        do {
            let head = try await manifest(repository, reference, method: "HEAD").head
            report.manifest = "\(head.status) \(head["Docker-Content-Digest"].map { String($0.prefix(19)) + "…" } ?? "(no digest)")"
            report.blobRedirect = await blobRedirect(repository, reference)
        } catch {
            report.manifest = Self.short(error)
        }
        if let r = rateLimit {
            report.rateLimit = "\(r.remaining.map(String.init) ?? "?")/\(r.limit.map(String.init) ?? "?")"
                + (r.window.map { " per \($0)s" } ?? "") + (r.source.map { " (\($0))" } ?? "")
        } else {
            report.rateLimit = "none sent"
        }
        report.milliseconds = Self.ms(since: start)
        return report
    }

    /// Follows a manifest (and an index's first child) to a blob and GETs its first byte to see where the
    /// upstream redirects blob downloads.
    private func blobRedirect(_ repository: RepositoryName, _ reference: Reference) async -> String {
        do {
            var body = try await manifest(repository, reference, method: "GET").body
            var summary = try ManifestSummary(parsing: body)
            if let child = summary.manifests.first {
                body = try await manifest(repository, .digest(child.digest), method: "GET").body
                summary = try ManifestSummary(parsing: body)
            }
            guard let blob = summary.blobs.first else { return "no blob to check" }
            let response = try await send(method: "GET", path: "/v2/\(repository.value)/blobs/\(blob.digest)", scope: repository,
                                          headers: [("Range", "bytes=0-0"), ("Accept-Encoding", "identity")], sink: nil,
                                          bufferLimit: 64 * 1024, limits: configuration.requestLimits)
            guard let final = URLParts(response.url), let origin = URLParts(configuration.url) else { return "?" }
            return final.sameOrigin(origin) ? "none" : final.host
        } catch {
            return Self.short(error)
        }
    }

    static func short(_ error: Error) -> String {
        let text = "\(error)"
        return text.count > 70 ? String(text.prefix(70)) + "…" : text
    }

    static func ms(since start: ContinuousClock.Instant) -> Int {
        let d = ContinuousClock.now - start
        return Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }
}
