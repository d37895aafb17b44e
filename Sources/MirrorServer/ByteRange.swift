/// A single byte range from a `Range` header (RFC 9110 §14.1.2), resolved against a size.
public struct ByteRange: Equatable, Sendable {
    /// First byte offset, inclusive.
    public var start: Int64
    /// Last byte offset, inclusive.
    public var end: Int64
    public var count: Int64 { end - start + 1 }

    public init(start: Int64, end: Int64) {
        self.start = start
        self.end = end
    }

    public enum ParseResult: Equatable {
        /// No usable single range: serve the whole body with 200 (RFC 9110 allows ignoring Range).
        case whole
        case range(ByteRange)
        /// 416 Range Not Satisfiable.
        case unsatisfiable
    }

    /// Resolves `bytes=a-b`, `bytes=a-` or `bytes=-n` against a body of `size` bytes. The unit is
    /// case-insensitive; positions are plain digits (no sign); a position too large for 64 bits counts as
    /// "past the end". Multi-range requests and other units are ignored (whole body), as distribution does.
    public static func parse(_ header: String?, size: Int64) -> ParseResult {
        guard let header, header.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash], last = spec[spec.index(after: dash)...]
        func position(_ s: Substring) -> Int64?? {
            guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }) else { return .none }
            return .some(Int64(s) ?? Int64.max)  // all digits but overflowing: as good as infinite
        }
        if first.isEmpty {
            guard case .some(let n?) = position(last) else { return .whole }
            guard n > 0, size > 0 else { return .unsatisfiable }
            return .range(ByteRange(start: max(0, size - n), end: size - 1))
        }
        guard case .some(let a?) = position(first) else { return .whole }
        var b = size - 1
        if !last.isEmpty {
            guard case .some(let parsed?) = position(last), parsed >= a else { return .whole }
            b = min(parsed, size - 1)
        }
        guard a < size else { return .unsatisfiable }
        return .range(ByteRange(start: a, end: b))
    }
}

import Foundation
