extension UpstreamClient {
    /// `path` with `ns=<namespace>` added to its query (after `?`, or `&` when it has one already), for an
    /// endpoint that is itself a mirror. Only registry API paths get it: token realms and redirect targets are
    /// other services, and a signed CDN URL must not change.
    ///
    /// Source: containerd's `hosts.toml` mirrors (`ns` query parameter, `remotes/docker/resolver.go`).
    static func namespaced(_ path: String, _ namespace: String?) -> String {
        guard let namespace else { return path }
        return path + (path.contains("?") ? "&" : "?") + "ns=" + formEncode(namespace)
    }
}
