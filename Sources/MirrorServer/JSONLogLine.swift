import Foundation
import Logging
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// The JSON layout (`log_format: json`), one object per line:
/// `{"timestamp":"2026-11-30T22:54:23.123Z","level":"info","label":"cove.http","message":"…","metadata":{…}}`.
/// Metadata values are rendered as strings (nested lists and dictionaries as their description).
enum JSONLogLine {
    /// One JSON line (with the trailing newline), keys of `metadata` sorted.
    static func line(timestamp: Date, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata) -> String {
        var s = "{\"timestamp\":\"\(Self.iso8601(timestamp))\",\"level\":\"\(level.rawValue)\",\"label\":"
        appendQuoted(label, to: &s)
        s += ",\"message\":"
        appendQuoted(message, to: &s)
        if !metadata.isEmpty {
            s += ",\"metadata\":{"
            var first = true
            for key in metadata.keys.sorted() {
                if !first { s += "," }
                first = false
                appendQuoted(key, to: &s)
                s += ":"
                appendQuoted("\(metadata[key]!)", to: &s)
            }
            s += "}"
        }
        s += "}\n"
        return s
    }

    /// Appends `text` as a JSON string literal (the same escaping as the registry error envelope).
    static func appendQuoted(_ text: String, to s: inout String) {
        s += DistributionError.jsonString(text)
    }

    /// `yyyy-MM-ddTHH:mm:ss.SSSZ` in UTC.
    static func iso8601(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&t, &parts)
        let ms = Int((date.timeIntervalSince1970 - Double(t)) * 1000)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), min(ms, 999))
    }
}
