import Foundation
import Logging
import MirrorServer
import Synchronization
import Testing

/// `--log-format json`: one JSON object per line with timestamp, level, label, message and metadata.
@Suite("JSON log lines")
struct JSONLogHandlerTests {
    @Test func eachRecordIsOneParsableObject() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "cove.http") { label in JSONLogHandler(label: label) { line in lines.withLock { $0.append(line) } } }
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
}

extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }
}
