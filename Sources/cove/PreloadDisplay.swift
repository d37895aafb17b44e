import CacheAdmin
import Foundation
import Mirror

/// How `cove preload` shows progress: on a terminal, a block redrawn every 500 ms (a line per started image
/// with blobs, bytes, percentage, rate and ETA, then the totals with rate and ETA); otherwise plain log lines when an image
/// is resolved, completes or fails, and a totals line every 10 s. Both end with the summary
/// (`PreloadStatus.summaryText`: one line per image, then images, blobs, bytes, time).
final class PreloadDisplay: @unchecked Sendable {
    let live: Bool
    let quiet: Bool
    /// Lines of the live block drawn last (to redraw over them).
    private var drawn = 0
    /// Per image, the state already logged (plain mode).
    private var logged: [Int: PreloadStatus.State] = [:]
    private var lastTotals = ContinuousClock.now

    /// - Parameters: live: redraw a block (stdout is a terminal); quiet: print nothing until the end (`--json`).
    init(live: Bool, quiet: Bool) {
        self.live = live
        self.quiet = quiet
    }

    /// Shows `status()` every 500 ms until it says finished or returns nil.
    func follow(_ status: () async -> PreloadStatus?) async {
        while true {
            guard let s = await status() else { return }
            show(s)
            if s.finished { return }
            try? await Task.sleep(for: .milliseconds(500))
        }
    }

    /// A line outside the live block.
    func note(_ text: String) {
        guard !quiet else { return }
        clear()
        print(live ? text : "preload: \(text)")
        flush()
    }

    func show(_ s: PreloadStatus) {
        guard !quiet else { return }
        if live { draw(s) } else { log(s) }
    }

    /// Replaces the live block by the summary (or prints the JSON answer).
    func finish(_ final: PreloadJobStatus, json: Bool) {
        if json {
            print(String(decoding: (try? AdminCoding.encoder.encode(final)) ?? Data(), as: UTF8.self))
            return
        }
        clear()
        print(final.status.summaryText)
        flush()
    }

    private func draw(_ s: PreloadStatus) {
        var lines: [String] = []
        let started = s.images.filter { $0.state != .queued }
        // The running images and the last finished ones; at most 12 lines.
        for image in started.suffix(12) {
            let name = Self.truncated(image.resolved ?? image.image, 60)
            switch image.state {
            case .fetching:
                let pct = image.bytes > 0 ? Int(Double(image.bytesDone) * 100 / Double(image.bytes)) : 0
                var line = "  fetching  \(name)  \(image.blobsCached + image.blobsFetched)/\(image.blobs) blobs  "
                    + "\(ByteFormat.human(image.bytesDone)) / \(ByteFormat.human(image.bytes))  \(min(pct, 100))%  \(ByteFormat.human(Int64(image.rate)))/s"
                if let eta = image.eta { line += "  ETA \(PreloadStatus.duration(eta))" }
                lines.append(line)
            case .resolving: lines.append("  resolving \(name)")
            case .done: lines.append("  done      \(name)  \(image.blobs) blobs  \(ByteFormat.human(image.bytes))  \(PreloadStatus.duration(image.seconds))")
            case .failed: lines.append("  FAILED    \(name)")
            case .queued: break
            }
        }
        lines.append(Self.totals(s))
        clear()
        for line in lines { print("\u{1B}[2K" + line) }
        drawn = lines.count
        flush()
    }

    private func log(_ s: PreloadStatus) {
        for (i, image) in s.images.enumerated() where logged[i] != image.state {
            let name = image.resolved ?? image.image
            switch image.state {
            case .fetching:
                print("preload: \(name) is \(image.digest ?? "?"): \(image.manifests) manifests, \(image.blobs) blobs "
                      + "(\(image.blobsCached) already cached), \(ByteFormat.human(image.bytes))")
            case .done:
                if logged[i] != .fetching {
                    print("preload: \(name) is \(image.digest ?? "?"): \(image.manifests) manifests, \(image.blobs) blobs")
                }
                print("preload: \(name) complete and pinned (\(image.blobsFetched) blobs fetched, \(image.blobsCached) already cached) in \(PreloadStatus.duration(image.seconds))")
            case .failed:
                print("preload: \(name) FAILED: \((image.error ?? "").replacingOccurrences(of: "\n", with: "; "))")
            case .queued, .resolving: break
            }
            logged[i] = image.state
        }
        if ContinuousClock.now - lastTotals >= .seconds(10), !s.finished {
            lastTotals = .now
            print("preload: " + Self.totals(s))
        }
        flush()
    }

    static func totals(_ s: PreloadStatus) -> String {
        var line = "total: \(s.done + s.failed.count)/\(s.images.count) images, \(s.blobsCached + s.blobsFetched)/\(s.blobs) blobs, "
            + "\(ByteFormat.human(s.bytesCached + s.bytesFetched)) / \(ByteFormat.human(s.bytes)), \(ByteFormat.human(Int64(s.rate)))/s"
        if let eta = s.eta { line += ", ETA \(PreloadStatus.duration(eta))" }
        return line
    }

    private func clear() {
        guard live, drawn > 0 else { return }
        print("\u{1B}[\(drawn)A\u{1B}[J", terminator: "")
        drawn = 0
    }

    private func flush() { fflush(nil) }

    static func truncated(_ s: String, _ n: Int) -> String { s.count <= n ? s : "…" + s.suffix(n - 1) }
}
