/// An error code from the OCI distribution spec ("Error Codes") and the HTTP status Cove answers it with.
public enum DistributionErrorCode: String, Sendable, CaseIterable {
    case blobUnknown = "BLOB_UNKNOWN"
    case blobUploadInvalid = "BLOB_UPLOAD_INVALID"
    case blobUploadUnknown = "BLOB_UPLOAD_UNKNOWN"
    case digestInvalid = "DIGEST_INVALID"
    case manifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
    case manifestInvalid = "MANIFEST_INVALID"
    case manifestUnknown = "MANIFEST_UNKNOWN"
    case nameInvalid = "NAME_INVALID"
    case nameUnknown = "NAME_UNKNOWN"
    case sizeInvalid = "SIZE_INVALID"
    case unauthorized = "UNAUTHORIZED"
    case denied = "DENIED"
    case unsupported = "UNSUPPORTED"
    case tooManyRequests = "TOOMANYREQUESTS"
    case tagInvalid = "TAG_INVALID"
    case rangeInvalid = "RANGE_INVALID"
    /// Not in the spec's table; distribution answers an `n` that is not a non-negative integer with it (400).
    case paginationNumberInvalid = "PAGINATION_NUMBER_INVALID"
    /// Not in the spec's table; distribution uses `UNAVAILABLE` (503) when a proxied upstream fails.
    case unavailable = "UNAVAILABLE"
    /// Not in the spec's table; distribution's generic 500 code.
    case unknown = "UNKNOWN"

    /// The HTTP status distribution/distribution answers this code with.
    public var httpStatus: Int {
        switch self {
        case .blobUnknown, .manifestUnknown, .nameUnknown, .blobUploadUnknown: 404
        case .unauthorized: 401
        case .denied: 403
        case .unsupported: 405
        case .tooManyRequests: 429
        case .rangeInvalid: 416
        case .unavailable: 503
        case .unknown: 500
        default: 400
        }
    }
}

/// A registry error as it travels from where it is detected to the JSON error envelope.
public struct DistributionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: DistributionErrorCode
    /// A human-readable message for the `message` field; never contains credentials.
    public var message: String
    /// The HTTP status to answer with; defaults to the code's status.
    public var status: Int
    /// Extra response headers (e.g. `Retry-After` with a 429).
    public var headers: [(String, String)]

    public init(_ code: DistributionErrorCode, _ message: String, status: Int? = nil, headers: [(String, String)] = []) {
        self.code = code
        self.message = message
        self.status = status ?? code.httpStatus
        self.headers = headers
    }

    public static func == (a: DistributionError, b: DistributionError) -> Bool {
        a.code == b.code && a.message == b.message && a.status == b.status
    }

    public var description: String { "\(code.rawValue): \(message)" }

    public static func nameInvalid(_ m: String) -> Self { .init(.nameInvalid, m) }
    public static func tagInvalid(_ m: String) -> Self { .init(.tagInvalid, m) }
    public static func digestInvalid(_ m: String) -> Self { .init(.digestInvalid, m) }
    public static func manifestInvalid(_ m: String) -> Self { .init(.manifestInvalid, m) }

    /// The registry JSON error envelope, `{"errors":[{"code":"…","message":"…"}]}` (OCI distribution spec,
    /// "Error Codes"), as UTF-8 bytes.
    public var envelope: [UInt8] {
        Array(#"{"errors":[{"code":"\#(code.rawValue)","message":\#(Self.jsonString(message))}]}"#.utf8)
    }

    /// `s` as a JSON string literal with quotes, backslashes and control characters escaped.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
