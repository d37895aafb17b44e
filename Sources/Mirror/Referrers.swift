import CacheIndex
import Foundation
import OCI
import Upstream

/// A referrers list ready to serve: an OCI image index of the manifests whose `subject` is the digest asked for.
public struct ServedReferrers: Sendable {
    public var body: [UInt8]
    /// `Link` to the next page, pointing at this mirror, if the upstream paginated.
    public var link: String?
    /// True when the list is filtered by the `artifactType` asked for (`OCI-Filters-Applied: artifactType`).
    public var filtersApplied: Bool
    /// True when no upstream endpoint could answer and the cached list was served.
    public var stale: Bool
}

extension Mirror {
    /// `GET /v2/<name>/referrers/<digest>` (OCI distribution spec 1.1, "Listing Referrers"), cached like a tag:
    /// trusted for `tagTTL`, then fetched again; served stale when no endpoint can answer; served from the cache
    /// offline. An upstream without the API answers 404, passed on so that clients (cosign, notation, oras) fall
    /// back to the `sha256-<hex>` tag schema, which Cove serves as ordinary tags. When the upstream ignored
    /// `artifactType`, Cove filters the list itself and says so with `OCI-Filters-Applied`.
    /// - Parameters:
    ///   - query: the client's query without `ns`, percent-encoded (`artifactType`, pagination), part of the cache key.
    ///   - artifactType: the decoded `artifactType` filter, if any.
    /// - Throws: `MANIFEST_UNKNOWN` (404) when the upstream lacks the API or, offline, nothing is cached; the
    ///   upstream mappings of `manifest(_:_:)` when nothing is cached to fall back on.
    public func referrers(_ registry: RegistryClient, _ name: RepositoryName, _ subject: Digest, query: String,
                          artifactType: String?) async throws(DistributionError) -> ServedReferrers {
        let upstreamName = registry.upstreamName(for: name)
        let key = ReferrersRecord(registry: registry.name, repository: upstreamName.value, subject: subject.description, query: query,
                                  digest: "", nextQuery: nil, filtersApplied: false, fetchedAt: Date(), checkedAt: Date())
        let cached = try cachedReferrers(key, name: name)
        if let (record, served) = cached, servesCacheOnly || Date().timeIntervalSince(record.checkedAt) < configuration.tagTTL {
            return served
        }
        if servesCacheOnly {
            throw DistributionError(.manifestUnknown, "referrers of \(name)@\(subject) are not cached and this mirror is offline")
        }
        let failure: DistributionError
        do {
            let response = try await registry.referrers(upstreamName, subject, query: query)
            switch Self.acceptReferrers(response, artifactType: artifactType) {
            case .refused(let why):
                failure = .from(.invalidContent(why), notFound: .manifestUnknown, subject: "referrers of \(name)@\(subject)")
            case .accepted(let body, let filtered):
                let next = PageLink.nextQuery(response.head["Link"]).map { PageLink.query($0, dropping: "ns") }
                store(referrers: body, key: key, nextQuery: next, filtersApplied: filtered)
                return ServedReferrers(body: body, link: next.map { PageLink.next(name: name, path: "referrers/\(subject)", query: $0) },
                                       filtersApplied: filtered, stale: false)
            }
        } catch {
            failure = .from(error, notFound: .manifestUnknown, subject: "referrers of \(name)@\(subject)")
        }
        guard failure.status != 404, [.unavailable, .tooManyRequests, .denied].contains(failure.code), var stale = cached?.1 else { throw failure }
        logger.warning("referrers unavailable upstream; serving the cached list", metadata: [
            "repository": "\(name)", "subject": "\(subject)", "error": "\(failure.message)",
        ])
        stale.stale = true
        return stale
    }

    enum ReferrersVerdict {
        case accepted(body: [UInt8], filtered: Bool)
        case refused(String)
    }

    /// Checks a referrers answer (an image index: a JSON object with a `manifests` array) and applies the
    /// `artifactType` filter when the upstream did not (no `OCI-Filters-Applied: artifactType`).
    static func acceptReferrers(_ response: UpstreamResponse, artifactType: String?) -> ReferrersVerdict {
        let origin = URLParts(response.url)?.origin ?? "upstream"
        let ct = response.head["Content-Type"]?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        guard ct.isEmpty || ct == MediaType.ociIndex || MediaType.genericContentTypes.contains(ct),
              var object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
              let manifests = object["manifests"] as? [[String: Any]] else {
            return .refused("\(origin) answered \(ct.isEmpty ? "a body" : ct) that is not a referrers image index")
        }
        guard let artifactType else { return .accepted(body: response.body, filtered: false) }
        let applied = (response.head["OCI-Filters-Applied"] ?? "").split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == "artifactType" }
        if applied { return .accepted(body: response.body, filtered: true) }
        object["manifests"] = manifests.filter { ($0["artifactType"] as? String) == artifactType }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return .refused("\(origin) answered a referrers index that cannot be filtered")
        }
        return .accepted(body: [UInt8](data), filtered: true)
    }

    /// The cached list for `key` and its row; nil when there is none or its body is gone (forgotten then).
    private func cachedReferrers(_ key: ReferrersRecord, name: RepositoryName) throws(DistributionError) -> (ReferrersRecord, ServedReferrers)? {
        let row = try indexRead { try index.referrers(registry: key.registry, repository: key.repository, subject: key.subject, query: key.query) }
        guard let row, let digest = try? Digest(row.digest) else { return nil }
        guard case .success(let body) = store.read(digest), Digest.sha256(of: body) == digest else { return nil }
        let link = row.nextQuery.map { PageLink.next(name: name, path: "referrers/\(key.subject)", query: $0) }
        return (row, ServedReferrers(body: body, link: link, filtersApplied: row.filtersApplied, stale: false))
    }

    /// Stores a referrers body as a blob and its row; a failure is logged (serving goes on from memory).
    private func store(referrers body: [UInt8], key: ReferrersRecord, nextQuery: String?, filtersApplied: Bool) {
        let digest = Digest.sha256(of: body)
        var record = key
        record.digest = digest.description
        record.nextQuery = nextQuery
        record.filtersApplied = filtersApplied
        let lease = use.acquireForWrite(digest.description)
        defer { withExtendedLifetime(lease) {} }
        do {
            if !store.contains(digest) {
                try store.put(body, as: digest)
                budget.noteStored(Int64(body.count))
            }
            try index.upsertReferrers(record, size: Int64(body.count), now: configuration.now())
        } catch {
            logger.error("could not store referrers", metadata: ["subject": "\(key.subject)", "error": "\(error)"])
        }
    }
}
