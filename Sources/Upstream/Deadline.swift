/// A point in time by which one upstream operation must be answered.
///
/// An operation (a manifest GET, a tag revalidation, a blob HEAD, a tag list, the time until a blob's response
/// head) spans a token fetch, a 401 retry, redirects and failover across endpoints. Each libcurl exchange in it
/// gets `min(its own limit, time left)`, so a token realm, registry or CDN that accepts the connection and never
/// answers cannot hold a client longer than the operation's budget (issue 7, "bounded waits everywhere").
public struct Deadline: Sendable, Comparable {
    /// The instant, or nil for "no deadline".
    public let instant: ContinuousClock.Instant?

    /// No deadline: only the transfer's own limits apply.
    public static let none = Deadline(instant: nil)

    init(instant: ContinuousClock.Instant?) { self.instant = instant }

    /// A deadline `seconds` from `now`.
    public init(seconds: Double, now: ContinuousClock.Instant = .now) {
        instant = now + .milliseconds(Int64((max(0, min(seconds, 86_400)) * 1000).rounded()))
    }

    /// Seconds left (never negative), or nil without a deadline.
    public func remaining(now: ContinuousClock.Instant = .now) -> Double? {
        guard let instant else { return nil }
        guard instant > now else { return 0 }
        let d = instant - now
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    /// True once the deadline has passed.
    public func hasPassed(now: ContinuousClock.Instant = .now) -> Bool {
        guard let instant else { return false }
        return instant <= now
    }

    /// This deadline moved `seconds` later (`none` stays `none`).
    public func later(by seconds: Double) -> Deadline {
        guard let instant else { return self }
        return Deadline(instant: instant + .milliseconds(Int64((seconds * 1000).rounded())))
    }

    /// The earlier of two deadlines (`none` is later than any instant).
    public func earlier(_ other: Deadline) -> Deadline { min(self, other) }

    public static func < (a: Deadline, b: Deadline) -> Bool {
        switch (a.instant, b.instant) {
        case (let x?, let y?): x < y
        case (.some, nil): true
        default: false
        }
    }

    /// `limit` seconds capped by the time left; `limit` 0 ("none") becomes the time left.
    func cap(_ limit: Double, now: ContinuousClock.Instant = .now) -> Double {
        guard let left = remaining(now: now) else { return limit }
        return limit > 0 ? min(limit, left) : left
    }

    /// The deadline for one attempt of `attemptsLeft` still to come: a fair share of the time left, so a
    /// stalled first endpoint cannot starve the next ones (at most `own` seconds, the endpoint's own limit).
    func share(attemptsLeft: Int, own: Double, now: ContinuousClock.Instant = .now) -> Deadline {
        guard let left = remaining(now: now) else { return own > 0 ? Deadline(seconds: own, now: now) : .none }
        var seconds = attemptsLeft > 1 ? left / Double(attemptsLeft) : left
        if own > 0 { seconds = min(seconds, own) }
        return Deadline(seconds: seconds, now: now).earlier(self)
    }
}

extension TransferLimits {
    /// These limits with `deadline` applied at `now`: connect and total timeouts capped by the time left.
    /// A total timeout of 0 (blob bodies) stays 0: the deadline then bounds only the wait for the response head
    /// (`headTimeout`), since a large body may legitimately take longer than any small request.
    func effective(now: ContinuousClock.Instant = .now) -> (limits: TransferLimits, headTimeout: Double?) {
        var l = self
        l.connectTimeout = deadline.cap(connectTimeout, now: now)
        guard totalTimeout == 0 else {
            l.totalTimeout = deadline.cap(totalTimeout, now: now)
            return (l, nil)
        }
        return (l, deadline.remaining(now: now))
    }
}
