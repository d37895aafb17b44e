import Foundation

/// The rate-limit state an upstream last reported (Docker Hub: `ratelimit-limit: 100;w=21600`,
/// `ratelimit-remaining: 76;w=21600`, `docker-ratelimit-source: <ip or user>`).
public struct RateLimitStatus: Sendable, Equatable {
    /// Pulls allowed per window.
    public var limit: Int?
    /// Pulls left in the current window.
    public var remaining: Int?
    /// Window length in seconds (`w=`).
    public var window: Int?
    /// Who the limit is counted against.
    public var source: String?
    /// When it was observed.
    public var observedAt: Date

    /// Parses the headers of a response; nil when it carries none of them.
    public init?(_ head: ResponseHead, now: Date = Date()) {
        let limitHeader = head["ratelimit-limit"], remainingHeader = head["ratelimit-remaining"]
        let source = head["docker-ratelimit-source"]
        guard limitHeader != nil || remainingHeader != nil || source != nil else { return nil }
        func parse(_ v: String?) -> (Int?, Int?) {
            guard let v else { return (nil, nil) }
            let parts = v.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            let value = parts.first.flatMap { Int($0) }
            let window = parts.dropFirst().first { $0.hasPrefix("w=") }.flatMap { Int($0.dropFirst(2)) }
            return (value, window)
        }
        let (limit, w1) = parse(limitHeader), (remaining, w2) = parse(remainingHeader)
        self.limit = limit
        self.remaining = remaining
        self.window = w1 ?? w2
        self.source = source
        self.observedAt = now
    }

    /// `Retry-After` as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
    public static func retryAfter(_ value: String?, now: Date = Date()) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value), seconds >= 0 { return seconds }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = f.date(from: value) else { return nil }
        return max(0, date.timeIntervalSince(now))
    }
}
