import Foundation
import Logging
import MirrorServer
import Synchronization
import Testing

/// `--log-format text`: Cove's own handler writes exactly swift-log's `StreamLogHandler` line layout.
@Suite("Text log lines")
struct TextLogHandlerTests {
    /// Collects what a `StreamLogHandler` writes.
    final class Captured: TextOutputStream, @unchecked Sendable {
        let lines = Mutex<[String]>([])
        func write(_ string: String) { lines.withLock { $0.append(string) } }
    }

    @Test func linesMatchSwiftLogsStreamHandler() throws {
        let ours = Mutex<[String]>([])
        let theirs = Captured()
        var text = Logger(label: "cove.http") { label in TextLogHandler(label: label) { line in ours.withLock { $0.append(line) } } }
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
        #expect(stamp == String(b[0].prefix { $0 != " " }) || abs((parser.date(from: String(b[0].prefix { $0 != " " })) ?? .distantPast).timeIntervalSince(date)) <= 1)
    }
}
