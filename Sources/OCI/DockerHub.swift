/// Docker Hub's naming rules, kept in one place (as distribution keeps them in its `reference` package):
/// the registry's canonical name, its aliases, and the `library/` namespace of official images.
///
/// Source: distribution/reference `normalize.go` (`legacyDefaultDomain = "index.docker.io"`,
/// `defaultDomain = "docker.io"`, `officialRepoPrefix = "library/"`) and Docker Hub's API host
/// `registry-1.docker.io`.
public enum DockerHub {
    /// The name clients use for Docker Hub (`?ns=docker.io`, `docker.io/library/busybox`).
    public static let name = "docker.io"
    /// The host that serves Docker Hub's registry API.
    public static let apiURL = "https://registry-1.docker.io"
    /// Every host name that means Docker Hub.
    public static let aliases: Set<String> = ["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"]
    /// The namespace of official images: a one-component name `busybox` is `library/busybox` on Docker Hub.
    public static let officialNamespace = "library"

    /// True when `host` (case-insensitive, without a port) is one of Docker Hub's names.
    public static func isAlias(_ host: String) -> Bool { aliases.contains(host.lowercased()) }

    /// The canonical form of a registry name: `docker.io` for any Docker Hub alias, else `name` lowercased.
    public static func canonicalRegistryName(_ name: String) -> String {
        let lower = name.lowercased()
        return aliases.contains(lower) ? self.name : lower
    }

    /// `library/<name>` for a one-component `name` (an official image), else `name` unchanged.
    /// - Throws: `NAME_INVALID` when the prefixed name is too long.
    public static func officialName(_ name: RepositoryName) throws(DistributionError) -> RepositoryName {
        name.components.count == 1 ? try name.prefixed(with: officialNamespace) : name
    }
}
