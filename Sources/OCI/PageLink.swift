/// The `Link: <url>; rel="next"` header of a paginated listing (OCI distribution spec, "Listing Tags" and
/// "Listing Referrers"; RFC 8288).
///
/// Upstreams send the URL relative (`</v2/<name>/tags/list?n=2&last=b>`) or absolute
/// (`<https://registry.example/v2/...>`); either way only the query matters to a mirror, which must point its
/// own clients back at itself.
public enum PageLink {
    /// The query string (without `?`) of the first `rel="next"` link in `header`; nil when there is none.
    /// A link without a query yields "".
    public static func nextQuery(_ header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ",") {
            guard let open = part.firstIndex(of: "<"), let close = part[open...].firstIndex(of: ">") else { continue }
            let params = part[part.index(after: close)...].split(separator: ";").map {
                $0.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: "\"", with: "")
            }
            guard params.contains("rel=next") else { continue }
            let url = part[part.index(after: open)..<close]
            guard let q = url.firstIndex(of: "?") else { return "" }
            return String(url[url.index(after: q)...].prefix { $0 != "#" })
        }
        return nil
    }

    /// `query` (already encoded, without `?`) without the parameter `name` — e.g. containerd's `ns`, which is
    /// for the mirror, not for the upstream, and is added back to each client's own links.
    public static func query(_ query: String, dropping name: String) -> String {
        query.split(separator: "&").filter { !$0.hasPrefix(name + "=") && $0 != name }.joined(separator: "&")
    }

    /// `</v2/<name>/<path>?<query>>; rel="next"`: a link for this mirror's own API.
    public static func next(name: RepositoryName, path: String, query: String) -> String {
        "</v2/\(name.value)/\(path)" + (query.isEmpty ? "" : "?" + query) + ">; rel=\"next\""
    }
}
