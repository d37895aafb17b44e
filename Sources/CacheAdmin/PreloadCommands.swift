import Foundation
import Mirror
import Synchronization

/// Preloads running inside `cove serve` (started through the admin socket), by job id. A job belongs to the
/// server, not to the CLI that started it: it runs to its end even if that CLI goes away. Finished jobs are
/// kept for an hour (at most 32) so their status can still be read.
public final class PreloadJobs: Sendable {
    struct Job {
        let preloader: Preloader
        var finishedAt: Date?
    }

    private let jobs = Mutex<[String: Job]>([:])

    public init() {}

    /// Starts preloading `images` on `mirror` in a task of its own.
    /// - Returns: the job id.
    /// - Throws: `PreloadError` when it cannot start (offline, bad platform).
    func start(on mirror: Mirror, images: [String], options: PreloadOptions) throws -> String {
        let preloader = try Preloader(mirror: mirror, images: images, options: options)
        let id = UUID().uuidString.lowercased()
        jobs.withLock { jobs in
            let cutoff = Date().addingTimeInterval(-3600)
            jobs = jobs.filter { ($0.value.finishedAt ?? .distantFuture) > cutoff }
            let finished = jobs.filter { $0.value.finishedAt != nil }.sorted { $0.value.finishedAt! < $1.value.finishedAt! }
            for (key, _) in finished.prefix(max(0, jobs.count - 31)) { jobs[key] = nil }
            jobs[id] = Job(preloader: preloader)
        }
        Task.detached { [self] in
            _ = await preloader.run()
            jobs.withLock { $0[id]?.finishedAt = Date() }
        }
        return id
    }

    /// The status of job `id`, nil when there is no such job (or it was forgotten).
    func status(_ id: String) -> PreloadStatus? {
        jobs.withLock { $0[id] }?.preloader.progress.snapshot()
    }
}

/// A preload's id and status: the answer of both `preload` and `preload-status`.
public struct PreloadJobStatus: AdminResponse, Equatable {
    /// The server's job id (`in-process` when the preload ran in the CLI process).
    public var id: String
    public var status: PreloadStatus

    public init(id: String, status: PreloadStatus) {
        self.id = id
        self.status = status
    }

    /// 1 when any image failed (the CLI's exit status once finished).
    public var exitStatus: Int32 { status.failed.isEmpty ? 0 : 1 }
    public var text: String { status.summaryText }
}

/// `cove preload`: start a preload. Inside a server it starts a job and answers at once (poll it with
/// `preload-status`); in the CLI process (no server) it runs to its end and answers the final status.
public struct PreloadCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        /// Images as typed (`registry/name:tag`, `name@digest`, `name:tag@digest`, short Docker Hub names).
        public var images: [String]
        public var options: PreloadOptions
        public init(images: [String], options: PreloadOptions) {
            self.images = images
            self.options = options
        }
    }

    public typealias Response = PreloadJobStatus
    public static let name = "preload"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> PreloadJobStatus {
        let mirror = try cache.requireMirror(name)
        if cache.isServer {
            let id = try cache.preloads.start(on: mirror, images: request.images, options: request.options)
            return PreloadJobStatus(id: id, status: cache.preloads.status(id)!)
        }
        let preloader = try Preloader(mirror: mirror, images: request.images, options: request.options)
        return PreloadJobStatus(id: "in-process", status: await preloader.run())
    }
}

/// `preload-status`: where a preload started in the server stands (the CLI polls it every 500 ms).
public struct PreloadStatusCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        public var id: String
        public init(id: String) { self.id = id }
    }

    public typealias Response = PreloadJobStatus
    public static let name = "preload-status"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> PreloadJobStatus {
        guard let status = cache.preloads.status(request.id) else { throw UnknownPreload(id: request.id) }
        return PreloadJobStatus(id: request.id, status: status)
    }
}

/// A `preload-status` for a job the server does not know (never started, forgotten, or another server).
struct UnknownPreload: Error, CustomStringConvertible {
    var id: String
    var description: String { "no preload job \(id) in this server (it may have been restarted)" }
}

extension PreloadStatus {
    /// One line per image (state, digest, blobs, bytes, time, platforms; the error lines of a failed one), then
    /// the totals: images, blobs, bytes, time.
    public var summaryText: String {
        var lines: [String] = []
        for image in images {
            let name = image.resolved ?? image.image
            switch image.state {
            case .done:
                var line = "done    \(name) \(image.digest ?? ""): \(image.manifests) manifests, \(image.blobs) blobs "
                    + "(\(image.blobsCached) already cached), \(ByteFormat.human(image.bytes)) in \(Self.duration(image.seconds))"
                if !image.platforms.isEmpty { line += "; platforms \(image.platforms.joined(separator: ", "))" }
                if image.referrers > 0 { line += "; \(image.referrers) referrers" }
                lines.append(line + "; pinned")
            case .failed:
                lines.append("FAILED  \(name): " + (image.error ?? "unknown error").replacingOccurrences(of: "\n", with: "\n        "))
            case .queued, .resolving, .fetching:
                lines.append("\(image.state.rawValue) \(name)")
            }
        }
        lines.append(totalsLine)
        return lines.joined(separator: "\n")
    }

    /// `images: 2 done, 1 failed; blobs: 9 (4 fetched, 5 already cached); bytes: 12 MiB fetched, 3 MiB cached; time 4.2 s (2.9 MiB/s)`.
    public var totalsLine: String {
        "images: \(done) done, \(failed.count) failed of \(images.count); blobs: \(blobs) (\(blobsFetched) fetched, \(blobsCached) already cached); "
            + "bytes: \(ByteFormat.human(bytesFetched)) fetched, \(ByteFormat.human(bytesCached)) already cached; "
            + "time \(Self.duration(elapsed)) (\(ByteFormat.human(Int64(rate)))/s)"
    }

    /// `4.2 s`, `3 min 05 s`.
    public static func duration(_ seconds: Double) -> String {
        if seconds < 60 { return String(format: "%.1f s", seconds) }
        let s = Int(seconds.rounded())
        return s < 3600 ? String(format: "%d min %02d s", s / 60, s % 60) : String(format: "%d h %02d min", s / 3600, (s % 3600) / 60)
    }
}
