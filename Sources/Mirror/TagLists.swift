import Foundation
import OCI
import Upstream

/// A tag list ready to serve.
public struct ServedTagList: Sendable {
    /// `{"name":…,"tags":[…]}` bytes.
    public var body: [UInt8]
    /// `Link` to the next page, pointing at this mirror (`</v2/<name>/tags/list?…>; rel="next"`), if any.
    public var link: String?
    /// True when no upstream endpoint could answer and the tags the cache knows were served instead.
    public var stale: Bool
}

extension Mirror {
    /// `GET /v2/<name>/tags/list` passed through to the upstream with its `n`/`last` query (OCI distribution
    /// spec, "Listing Tags"). The answer must be a JSON tag list; its `Link` is rebuilt to point at this mirror
    /// under the client's name, whatever form the upstream sent (relative or absolute URL). When no endpoint can
    /// answer (down, 5xx, 429, stalled, not a tag list), the tags the cache knows are served, marked stale.
    /// - Parameter query: the client's query without `ns`, already percent-encoded.
    /// - Throws: `NAME_UNKNOWN` (404) when the upstream does not know the repository, or offline with no cached
    ///   tags; the upstream mappings of `manifest(_:_:)` when nothing is cached.
    public func tags(_ registry: RegistryClient, _ name: RepositoryName, query: String) async throws(DistributionError) -> ServedTagList {
        let upstreamName = registry.upstreamName(for: name)
        if servesCacheOnly { return try cachedTags(registry, name, upstreamName, query: query, stale: false) }
        let failure: DistributionError
        do {
            let response = try await registry.tags(upstreamName, query: query)
            if let why = Self.tagListProblem(response) {
                failure = .from(.invalidContent(why), notFound: .nameUnknown, subject: "tag list of \(name)")
            } else {
                let link = PageLink.nextQuery(response.head["Link"]).map {
                    PageLink.next(name: name, path: "tags/list", query: PageLink.query($0, dropping: "ns"))
                }
                return ServedTagList(body: response.body, link: link, stale: false)
            }
        } catch {
            failure = .from(error, notFound: .nameUnknown, subject: "repository \(name)")
        }
        guard [.unavailable, .tooManyRequests, .denied].contains(failure.code),
              let known = try? cachedTags(registry, name, upstreamName, query: query, stale: true) else { throw failure }
        logger.warning("tag list unavailable upstream; serving the tags the cache knows", metadata: [
            "repository": "\(name)", "error": "\(failure.message)",
        ])
        return known
    }

    /// Why a tag list answer is not one (naming the endpoint), or nil: it must be a JSON object whose `tags`
    /// is an array of strings (or null, which some registries send for none).
    static func tagListProblem(_ response: UpstreamResponse) -> String? {
        let origin = URLParts(response.url)?.origin ?? "upstream"
        guard let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] else {
            let ct = response.head["Content-Type"] ?? "no Content-Type"
            return "\(origin) answered \(ct) with \(response.body.count) bytes, not a JSON tag list"
        }
        guard let tags = object["tags"], tags is NSNull || tags is [String] else {
            return "\(origin) answered a JSON document without a \"tags\" list"
        }
        return nil
    }

    /// The tags the cache knows for a repository, paginated with `n` and `last` like the spec's tag listing.
    func cachedTags(_ registry: RegistryClient, _ name: RepositoryName, _ upstreamName: RepositoryName, query: String, stale: Bool) throws(DistributionError) -> ServedTagList {
        var n: Int?, last: String?
        for pair in query.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { continue }
            if kv[0] == "n" { n = Int(kv[1]) }
            if kv[0] == "last" { last = kv[1].removingPercentEncoding }
        }
        // Only tags whose manifest is cached: an evicted image is not served, so it is not listed either.
        var tags = try indexRead { try index.servableTags(registry: registry.name, repository: upstreamName.value) }
        guard !tags.isEmpty else { throw DistributionError(.nameUnknown, "repository \(name) is not cached and this mirror is offline") }
        if let last { tags = tags.filter { $0 > last } }
        var link: String?
        if let n, n >= 0, tags.count > n {
            tags = Array(tags.prefix(n))
            let lastTag = (tags.last ?? "").addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._"))) ?? ""
            link = PageLink.next(name: name, path: "tags/list", query: "n=\(n)&last=\(lastTag)")
        }
        let list = tags.map { DistributionError.jsonString($0) }.joined(separator: ",")
        return ServedTagList(body: Array(#"{"name":\#(DistributionError.jsonString(name.value)),"tags":[\#(list)]}"#.utf8), link: link, stale: stale)
    }
}
