/// Media types Cove knows by name (OCI image spec "Media Types"; Docker Image Manifest V2 Schema 2).
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    public static let dockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
    public static let octetStream = "application/octet-stream"

    /// Every manifest media type Cove asks an upstream for, most preferred first. Cove stores whatever the
    /// upstream returns byte-exact, so the list is as wide as possible: one cached manifest serves every client.
    public static let manifestAccept: [String] = [
        ociIndex, dockerManifestList, ociManifest, dockerManifest, dockerSchema1Signed, dockerSchema1,
    ]

    /// `Content-Type` values that say nothing about the document (some registries and file servers send
    /// them for manifests): the body's `mediaType` or shape decides.
    public static let genericContentTypes: Set<String> = ["application/json", "application/octet-stream", "text/plain"]

    /// True for `text/html` (with or without parameters): what web servers, login pages and captive portals
    /// answer, and never registry content.
    public static func isHTML(_ contentType: String?) -> Bool {
        contentType?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() == "text/html"
    }
}
