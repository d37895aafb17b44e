import Crypto

/// A content digest such as `sha256:6c3c6…` (64 lowercase hex digits).
///
/// Grammar (OCI image spec, "Digests"): `algorithm ":" encoded`. Cove accepts the two registered algorithms,
/// `sha256` (64 hex) and `sha512` (128 hex), lowercase only, because it must be able to verify what it stores.
public struct Digest: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// A registered digest algorithm.
    public enum Algorithm: String, Sendable, CaseIterable {
        case sha256, sha512
        /// Number of hex digits in an encoded digest of this algorithm.
        public var hexLength: Int { self == .sha256 ? 64 : 128 }
    }

    public let algorithm: Algorithm
    /// The lowercase hex part after the colon.
    public let hex: String

    /// Parses and validates `string`.
    /// - Throws: `DistributionError` with code `DIGEST_INVALID`.
    public init(_ string: String) throws(DistributionError) {
        guard let colon = string.firstIndex(of: ":") else {
            throw .digestInvalid("digest \(RepositoryName.quoted(string)) has no algorithm prefix")
        }
        guard let algorithm = Algorithm(rawValue: String(string[..<colon])) else {
            throw .digestInvalid("unsupported digest algorithm in \(RepositoryName.quoted(string)) (sha256 and sha512 are supported)")
        }
        let hex = string[string.index(after: colon)...]
        guard hex.utf8.count == algorithm.hexLength,
              hex.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) })
        else {
            throw .digestInvalid("invalid \(algorithm.rawValue) digest \(RepositoryName.quoted(string)): need \(algorithm.hexLength) lowercase hex digits")
        }
        self.algorithm = algorithm
        self.hex = String(hex)
    }

    /// The `sha256` digest of `bytes`.
    public static func sha256<Bytes: Sequence>(of bytes: Bytes) -> Digest where Bytes.Element == UInt8 {
        var h = DigestHasher(.sha256)
        h.update(Array(bytes))
        return h.finalize()
    }

    init(algorithm: Algorithm, hex: String) {
        self.algorithm = algorithm
        self.hex = hex
    }

    public var description: String { algorithm.rawValue + ":" + hex }

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }
}

/// Incremental hashing for a `Digest` algorithm; a value type, cheap to update from a transfer callback.
public struct DigestHasher: Sendable {
    private var sha256: SHA256?
    private var sha512: SHA512?
    public let algorithm: Digest.Algorithm

    public init(_ algorithm: Digest.Algorithm) {
        self.algorithm = algorithm
        switch algorithm {
        case .sha256: sha256 = SHA256()
        case .sha512: sha512 = SHA512()
        }
    }

    /// Feeds `bytes` into the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if sha256 != nil { sha256!.update(bufferPointer: bytes) } else { sha512!.update(bufferPointer: bytes) }
    }

    /// Feeds `bytes` into the hash.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything fed so far.
    public func finalize() -> Digest {
        let hex: String
        if let sha256 { hex = Self.hex(sha256.finalize()) } else { hex = Self.hex(sha512!.finalize()) }
        return Digest(algorithm: algorithm, hex: hex)
    }

    private static func hex<D: Sequence>(_ d: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(128)
        for b in d { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
