import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes swift-log's own text line format (`--log-format text`, the default), as
/// `StreamLogHandler` does: `2026-12-01T06:30:00+0000 info cove.http: bytes=501 cache=hit … [MirrorServer] GET … 200`
/// (local time, metadata keys sorted, then the source module and the message).
///
/// Why not `StreamLogHandler` itself: at `info` every request writes an access line, and on manifest hits (tens
/// of thousands a second) its per-line `localtime` (glibc's global time-zone lock), `strftime` and locked,
/// flushed `stdio` write cost about 6% of the CPU (bench/RESULTS.md). This handler formats the timestamp once
/// per second and writes each line with one `write(2)`, so lines from concurrent tasks never interleave.
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let output: @Sendable (String) -> Void

    /// - Parameter output: where finished lines go (default: standard error, one `write(2)` per line).
    public init(label: String, output: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let explicit { all.merge(explicit) { $1 } }
        output(Self.line(timestamp: Self.clock.now(), level: level, label: label, message: message.description,
                         metadata: all, source: source))
    }

    /// One line (with the trailing newline) in `StreamLogHandler`'s layout.
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
