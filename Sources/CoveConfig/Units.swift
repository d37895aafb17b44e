import Foundation
import Mirror

/// Parsers for the human units config values use. Units are case-sensitive (`5M` is not `5m`).
public enum Units {
    /// The longest duration accepted, in seconds (ten years): beyond it a value is a typo, and it would
    /// overflow the millisecond timers it feeds.
    public static let maxSeconds: Double = 315_360_000
    /// The largest size accepted, in bytes (1 EiB).
    public static let maxBytes: Double = 1_152_921_504_606_846_976

    /// Parses a duration such as `30s`, `5m`, `168h`, `1d`, `500ms` or a bare number of seconds.
    /// - Returns: seconds, or nil when malformed, negative or above `maxSeconds`.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces)
        var number = Substring(t), factor = 1.0
        for (suffix, f) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)] where t.hasSuffix(suffix) {
            number = t.dropLast(suffix.count)
            factor = f
            break
        }
        guard let v = plainNumber(number) else { return nil }
        let seconds = v * factor
        return seconds <= maxSeconds ? seconds : nil
    }

    /// Parses a size such as `512MiB`, `200GiB`, `10GB`, `4096` (bytes), `1.5GiB`. Fractions of a byte round up.
    /// - Returns: bytes, or nil when malformed, negative or above `maxBytes`.
    public static func bytes(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [
            ("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1),
        ]
        var number = Substring(t), factor = 1.0
        for (suffix, f) in units where t.hasSuffix(suffix) {
            number = t.dropLast(suffix.count)
            factor = f
            break
        }
        guard let v = plainNumber(number.trimmingCharacters(in: .whitespaces)[...]) else { return nil }
        let bytes = (v * factor).rounded(.up)
        return bytes <= maxBytes ? Int64(bytes) : nil
    }

    /// Parses free space to keep: a size (`20GiB`, `0` to keep none) or a percentage of the file system
    /// (`5%`, `12.5%`, below 100).
    /// - Returns: the amount, or nil when malformed.
    public static func freeSpace(_ text: String) -> FreeSpace? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("%") {
            guard let p = plainNumber(t.dropLast().trimmingCharacters(in: .whitespaces)[...]), p < 100 else { return nil }
            return .fraction(p / 100)
        }
        return bytes(t).map { .bytes($0) }
    }

    /// Digits with at most one decimal point; no sign, exponent, `inf` or `nan`.
    private static func plainNumber(_ s: Substring) -> Double? {
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }), s.filter({ $0 == "." }).count <= 1,
              s != "." else { return nil }
        return Double(s)
    }
}
