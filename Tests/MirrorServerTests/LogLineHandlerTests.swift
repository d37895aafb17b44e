import Foundation
import Logging
import MirrorServer
import Synchronization
import Testing

/// Cove's log lines: `--log-format json` and `text`.
@Suite("Log lines")
struct LogLineHandlerTests {
    /// json: one JSON object per line with timestamp, level, label, message and metadata.
    @Test func eachJSONRecordIsOneParsableObject() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "cove.http") { label in LogLineHandler(label: label, format: .json) { line in lines.withLock { $0.append(line) } } }
        logger.logLevel = .debug
        logger.info("GET /v2/a\"b\nc 200", metadata: ["bytes": "12", "cache": "hit", "odd": "tab\there \u{1}"])
        logger.debug("second")
        logger.trace("not shown")
        let out = lines.withLock { $0 }
        #expect(out.count == 2)
        #expect(out.allSatisfy { $0.hasSuffix("}\n") && $0.dropLast().allSatisfy { $0 != "\n" } })
        let first = try #require(try JSONSerialization.jsonObject(with: Data(out[0].utf8)) as? [String: Any])
        #expect(first["level"] as? String == "info")
        #expect(first["label"] as? String == "cove.http")
        #expect(first["message"] as? String == "GET /v2/a\"b\nc 200")
        let metadata = first["metadata"] as? [String: String]
        #expect(metadata == ["bytes": "12", "cache": "hit", "odd": "tab\there \u{1}"])
        let timestamp = try #require(first["timestamp"] as? String)
        #expect(ISO8601DateFormatter.withFractionalSeconds.date(from: timestamp).map { abs($0.timeIntervalSinceNow) < 60 } == true, "\(timestamp)")
        let second = try #require(try JSONSerialization.jsonObject(with: Data(out[1].utf8)) as? [String: Any])
        #expect(second["level"] as? String == "debug" && second["metadata"] == nil)
    }

    /// Collects what a `StreamLogHandler` writes.
    final class Captured: TextOutputStream, @unchecked Sendable {
        let lines = Mutex<[String]>([])
        func write(_ string: String) { lines.withLock { $0.append(string) } }
    }

    /// text: exactly swift-log's `StreamLogHandler` layout.
    @Test func textLinesMatchSwiftLogsStreamHandler() throws {
        let ours = Mutex<[String]>([])
        let theirs = Captured()
        var text = Logger(label: "cove.http") { label in LogLineHandler(label: label, format: .text) { line in ours.withLock { $0.append(line) } } }
        var stream = Logger(label: "cove.http") { label in StreamLogHandler(label: label, stream: theirs, metadataProvider: nil) }
        text.logLevel = .debug
        stream.logLevel = .debug
        text[metadataKey: "node"] = "a"
        stream[metadataKey: "node"] = "a"
        for logger in [text, stream] {
            logger.info("GET /v2/library/busybox/manifests/latest 200", metadata: ["status": "200", "bytes": "501", "cache": "hit", "user": "\"bob\""])
            logger.debug("no metadata of its own")
            logger.trace("not shown")
        }
        let a = ours.withLock { $0 }
        let b = theirs.lines.withLock { $0 }
        #expect(a.count == 2 && b.count == 2)
        // The timestamps may straddle a second; everything after them must be identical.
        func body(_ line: String) -> Substring { line.drop { $0 != " " } }
        #expect(a.map(body) == b.map(body))
        #expect(a[0].hasSuffix("] GET /v2/library/busybox/manifests/latest 200\n"))
        #expect(body(a[0]).hasPrefix(" info cove.http: bytes=501 cache=hit node=a status=200 user=\"bob\" ["))
        // The timestamp is swift-log's: local time with the zone offset, e.g. 2026-12-01T06:30:00+0000.
        let stamp = String(a[0].prefix { $0 != " " })
        let parser = DateFormatter()
        parser.locale = Locale(identifier: "en_US_POSIX")
        parser.dateFormat = "yyyy-MM-dd'T'HH:mm:ssZ"
        let date = try #require(parser.date(from: stamp), "\(stamp)")
        #expect(abs(date.timeIntervalSinceNow) < 60)
        let theirs0 = try #require(parser.date(from: String(b[0].prefix { $0 != " " })))
        #expect(abs(theirs0.timeIntervalSince(date)) <= 1)
    }
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
