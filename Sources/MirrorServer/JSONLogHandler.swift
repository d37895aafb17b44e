import Foundation
import Logging
import OCI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A swift-log handler that writes one JSON object per line (`--log-format json`):
/// `{"timestamp":"2026-11-30T22:54:23.123Z","level":"info","label":"cove.http","message":"…","metadata":{…}}`.
/// Metadata values are rendered as strings (nested lists and dictionaries as their description). Each line is
/// one `write(2)`, so lines from concurrent tasks never interleave.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let output: @Sendable (String) -> Void

    /// - Parameter output: where finished lines go (default: standard error).
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
        output(Self.line(timestamp: Date(), level: level, label: label, message: message.description, metadata: all))
    }

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
