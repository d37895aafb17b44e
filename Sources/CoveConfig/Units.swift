/// Parsers for the human units config values use.
public enum Units {
    /// Parses a duration such as `30s`, `5m`, `168h`, `1d`, `500ms` or a bare number of seconds.
    /// - Returns: seconds, or nil when malformed.
    public static func seconds(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)] where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count)), v >= 0, v.isFinite else { return nil }
            return v * factor
        }
        guard let v = Double(t), v >= 0, v.isFinite else { return nil }
        return v
    }

    /// Parses a size such as `512MiB`, `200GiB`, `10GB`, `4096` (bytes), `1.5GiB`.
    /// - Returns: bytes, or nil when malformed.
    public static func bytes(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [
            ("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
            ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1),
        ]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let v = Double(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), v >= 0, v.isFinite else { return nil }
            return Int64(v * factor)
        }
        guard let v = Int64(t), v >= 0 else { return nil }
        return v
    }
}

import Foundation
