import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The text layout (`log_format: text`, the default), swift-log's `StreamLogHandler` line:
/// `2026-12-01T06:30:00+0000 info cove.http: bytes=501 cache=hit … [MirrorServer] GET … 200` (local time, metadata
/// keys sorted, then the source module and the message).
enum TextLogLine {
    /// One line, with the trailing newline.
    static func line(timestamp: String, level: Logger.Level, label: String, message: String, metadata: Logger.Metadata,
                     source: String) -> String {
        var s = timestamp
        s += " "
        s += level.rawValue
        if !label.isEmpty { s += " "; s += label }
        s += ":"
        for key in metadata.keys.sorted() {
            s += " "; s += key; s += "="; s += "\(metadata[key]!)"
        }
        s += " ["; s += source; s += "] "
        s += message
        s += "\n"
        return s
    }

    /// The process's timestamp text, rebuilt when the second changes.
    static let clock = SecondClock()

    /// `%Y-%m-%dT%H:%M:%S%z` in local time (`StreamLogHandler`'s format), formatted at most once per second.
    final class SecondClock: Sendable {
        private let last = Mutex<(second: time_t, text: String)>((-1, ""))

        func now() -> String {
            let second = time(nil)
            if let cached = last.withLock({ $0.second == second ? $0.text : nil }) { return cached }
            let text = Self.format(second)
            last.withLock { $0 = (second, text) }
            return text
        }

        static func format(_ second: time_t) -> String {
            var t = second
            var parts = tm()
            guard localtime_r(&t, &parts) != nil else { return "<unknown>" }
            var buffer = [CChar](repeating: 0, count: 64)
            _ = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return String(cString: buffer)
        }
    }
}
