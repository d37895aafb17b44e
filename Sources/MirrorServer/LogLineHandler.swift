import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Cove's swift-log handler: one line per record, written to standard error with one `write(2)`, so lines from
/// concurrent tasks never interleave; `log_format` chooses the layout (`TextLogLine` or `JSONLogLine`).
///
/// Why not swift-log's `StreamLogHandler` for text: at `info` every request writes an access line, and on
/// manifest hits (tens of thousands a second) its per-line `localtime` (glibc's global time-zone lock),
/// `strftime` and locked, flushed stdio write cost a fifth of the throughput (bench/RESULTS.md). The text
/// layout stays `StreamLogHandler`'s.
public struct LogLineHandler: LogHandler {
    /// The line layouts of `log_format`.
    public enum Format: Sendable {
        /// swift-log's `StreamLogHandler` layout (`TextLogLine`).
        case text
        /// One JSON object per line (`JSONLogLine`).
        case json
    }

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: Format
    let output: @Sendable (String) -> Void

    /// - Parameter output: where finished lines (each ending in a newline) go; default: standard error.
    public init(label: String, format: Format, output: @escaping @Sendable (String) -> Void = LogLineHandler.standardError) {
        self.label = label
        self.format = format
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
        switch format {
        case .text:
            output(TextLogLine.line(timestamp: TextLogLine.clock.now(), level: level, label: label,
                                    message: message.description, metadata: all, source: source))
        case .json:
            output(JSONLogLine.line(timestamp: Date(), level: level, label: label, message: message.description, metadata: all))
        }
    }

    /// Writes a line to standard error in one system call.
    public static let standardError: @Sendable (String) -> Void = { line in
        var line = line
        line.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(2, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { if errno == EINTR { continue }; return }
                offset += n
            }
        }
    }
}
