import Foundation
import Mirror

/// `cove gc [--dry-run]`: an eviction pass now (`Mirror.collectGarbage`).
public struct GCCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        public var dryRun: Bool
        public init(dryRun: Bool) { self.dryRun = dryRun }
    }

    public typealias Response = GCReport
    public static let name = "gc"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> GCReport {
        GCReport(try await cache.requireMirror(name).collectGarbage(dryRun: request.dryRun))
    }
}

/// What `cove gc` did (or, dry, would do).
public struct GCReport: AdminResponse, Equatable {
    public struct Object: Codable, Sendable, Equatable {
        public var digest: String
        /// Bytes.
        public var size: Int64
    }

    public var dryRun: Bool
    /// Least recently used first.
    public var evicted: [Object]
    /// Bytes freed, and the bytes the pass set out to free (0: within limits).
    public var bytesFreed: Int64
    public var bytesToFree: Int64
    public var objectsBefore: Int
    public var objectsAfter: Int
    public var bytesBefore: Int64
    public var bytesAfter: Int64
    /// File-system bytes available after the pass (nil: unknown).
    public var freeAfter: Int64?
    /// `cache.max_size` (nil: none) and `cache.min_free`, bytes.
    public var maxSize: Int64?
    public var minFreeBytes: Int64
    /// Candidates kept because a client was reading them or a fill writing them.
    public var skippedInUse: Int

    init(_ r: EvictionReport) {
        dryRun = r.dryRun
        evicted = r.evicted.map { Object(digest: $0.digest, size: $0.size) }
        bytesFreed = r.bytesFreed
        bytesToFree = r.bytesToFree
        objectsBefore = r.objectsBefore
        objectsAfter = r.objectsAfter
        bytesBefore = r.bytesBefore
        bytesAfter = r.bytesAfter
        freeAfter = r.freeAfter
        maxSize = r.maxSize
        minFreeBytes = r.minFreeBytes
        skippedInUse = r.skippedInUse
    }

    public var text: String {
        var lines = evicted.map { "\($0.digest)  \($0.size)" }
        var summary = "\(dryRun ? "would evict" : "evicted") \(evicted.count) objects, \(ByteFormat.human(bytesFreed)) (\(bytesFreed) bytes); "
            + "cache \(objectsBefore) objects \(ByteFormat.human(bytesBefore)) -> \(objectsAfter) objects \(ByteFormat.human(bytesAfter))"
        summary += "; max_size " + (maxSize.map(ByteFormat.human) ?? "none")
        if let freeAfter { summary += "; free \(ByteFormat.human(freeAfter)) (min_free \(ByteFormat.human(minFreeBytes)))" }
        if skippedInUse > 0 { summary += "; \(skippedInUse) in use, kept" }
        if bytesFreed < bytesToFree {
            summary += "; could not free \(ByteFormat.human(bytesToFree - bytesFreed)) more (pinned, in use or recent)"
        }
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

/// One line of `cove pin` / `cove unpin` per image, and whether it worked.
public struct PinReport: AdminResponse, Equatable {
    public struct Line: Codable, Sendable, Equatable {
        public var image: String
        public var ok: Bool
        public var message: String
    }

    public var lines: [Line]
    public var exitStatus: Int32 { lines.allSatisfy(\.ok) ? 0 : 1 }
    public var text: String { lines.map(\.message).joined(separator: "\n") }

    /// One line per image: what `each` says, or why it threw.
    static func each(_ images: [String], verb: String, _ each: (String) throws -> String) -> PinReport {
        PinReport(lines: images.map { image in
            do { return Line(image: image, ok: true, message: try each(image)) } catch {
                return Line(image: image, ok: false, message: "cannot \(verb) \(image): \(error)")
            }
        })
    }
}

/// An image `cove unpin` was given that carries no pin.
struct NotPinned: Error, CustomStringConvertible {
    var image: String
    var description: String { "\(image) was not pinned" }
}

/// `cove pin IMAGE...` (`Mirror.pin`): eviction never removes these images (an index pins its children).
public struct PinCommand: AdminCommand {
    public struct Request: Codable, Sendable {
        public var images: [String]
        public init(images: [String]) { self.images = images }
    }

    public typealias Response = PinReport
    public static let name = "pin"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> PinReport {
        let mirror = try cache.requireMirror(name)
        return .each(request.images, verb: "pin") { image in
            let p = try mirror.pin(image)
            let what = p.cached && p.digest != nil
                ? "\(p.digest!), \(p.objects) cached objects, \(ByteFormat.human(p.bytes))"
                : "not cached yet: it is protected once pulled"
            return "pinned \(p.image) (\(what))"
        }
    }
}

/// `cove unpin IMAGE...` (`Mirror.unpin`): eviction may consider these images again.
public struct UnpinCommand: AdminCommand {
    public typealias Request = PinCommand.Request
    public typealias Response = PinReport
    public static let name = "unpin"

    public static func run(_ request: Request, on cache: CacheAdmin) async throws -> PinReport {
        let mirror = try cache.requireMirror(name)
        return .each(request.images, verb: "unpin") { image in
            let (ref, removed) = try mirror.unpin(image)
            guard removed else { throw NotPinned(image: "\(ref)") }
            return "unpinned \(ref)"
        }
    }
}
