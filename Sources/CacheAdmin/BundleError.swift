/// Why `cove export` or `cove import` failed; the message names the image, the digest or the bundle entry.
public struct BundleError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
