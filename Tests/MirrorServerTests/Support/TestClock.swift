import Foundation
import Synchronization

/// A settable clock for `MirrorConfiguration.now`: access times, commit times and grace ages move only when
/// a test says so.
final class TestClock: Sendable {
    private let current: Mutex<Date>

    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = Mutex(start) }

    var now: @Sendable () -> Date { { [self] in current.withLock { $0 } } }

    func advance(_ seconds: Double) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
