import ArgumentParser
import BlobStore
import CoveConfig
import Foundation
import Logging
import Mirror
import Upstream

/// Opens the cache the configuration names, in this process (taking the storage lock, as `serve` does).
/// - Throws: a `ValidationError` saying so when a running `cove serve` holds the storage.
/// - Parameter exclusive: the command runs with nobody else using the storage, so content has no grace age
///   (the grace protects what a concurrent fill just committed, and the lock rules that out).
func openCache(_ options: ConfigOptions, exclusive: Bool = false) throws -> Mirror {
    var config = try options.load()
    if exclusive { config.cache.evictionGrace = 0 }
    var logger = Logger(label: "cove")
    logger.logLevel = Logger.Level(rawValue: config.logLevel) ?? .info
    if logger.logLevel < .notice { logger.logLevel = .notice }
    let router = UpstreamRouter(registries: config.effectiveRegistries, defaultName: config.defaultRegistry,
                                allowAnyRegistry: config.allowAnyRegistry, ignoresNamespace: config.ignoresNamespace, logger: logger)
    do {
        return try Mirror(storage: URL(fileURLWithPath: config.storage), router: router, configuration: config.cache, logger: logger)
    } catch let error as BlobStoreError {
        if case .inUse(let why) = error { throw ValidationError("\(why): stop it first (or run this command through it once the admin socket is available)") }
        throw ValidationError("cannot open the cache in \(config.storage): \(error)")
    }
}

/// Bytes for people: `1.5 GiB`.
func humanBytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(n), i = 0
    while abs(v) >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}

/// `cove gc [--dry-run]`: evict least recently used content now.
struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Evict least recently used content now, down to 90% of cache.max_size and above cache.min_free.",
        discussion: "Pinned content, content being served or filled, and content fetched in the last two minutes are never evicted.")

    @OptionGroup var options: ConfigOptions

    @Flag(help: "Print what would be evicted without removing anything.")
    var dryRun = false

    func run() async throws {
        let mirror = try openCache(options, exclusive: true)
        defer { mirror.close() }
        let r = try await mirror.collectGarbage(dryRun: dryRun)
        print(Self.render(r))
    }

    static func render(_ r: EvictionReport) -> String {
        var lines = r.evicted.map { "\($0.digest)  \($0.size)" }
        let verb = r.dryRun ? "would evict" : "evicted"
        var summary = "\(verb) \(r.evicted.count) objects, \(humanBytes(r.bytesFreed)) (\(r.bytesFreed) bytes); "
            + "cache \(r.objectsBefore) objects \(humanBytes(r.bytesBefore)) -> \(r.objectsAfter) objects \(humanBytes(r.bytesAfter))"
        summary += "; max_size " + (r.maxSize.map(humanBytes) ?? "none")
        if let free = r.freeAfter { summary += "; free \(humanBytes(free)) (min_free \(humanBytes(r.minFreeBytes)))" }
        if r.skippedInUse > 0 { summary += "; \(r.skippedInUse) in use, kept" }
        if r.bytesFreed < r.bytesToFree { summary += "; could not free \(humanBytes(r.bytesToFree - r.bytesFreed)) more (pinned, in use or recent)" }
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

/// `cove pin IMAGE...`: keep images through any eviction.
struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin images so eviction never removes them (an index pins its children).",
        discussion: "IMAGE is registry/name:tag, registry/name@digest or a short Docker Hub name (busybox:1.36). A tag pin also protects what the tag resolves to later; an image that is not cached yet is pinned for when it is pulled.")

    @OptionGroup var options: ConfigOptions

    @Argument(help: "Images to pin.")
    var images: [String]

    func run() async throws {
        let mirror = try openCache(options)
        defer { mirror.close() }
        var failed = 0
        for image in images {
            do {
                let p = try mirror.pin(image)
                if p.cached, let d = p.digest {
                    print("pinned \(p.image) (\(d), \(p.objects) cached objects, \(humanBytes(p.bytes)))")
                } else {
                    print("pinned \(p.image) (not cached yet: it is protected once pulled)")
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("cannot pin \(image): \(error)\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}

/// `cove unpin IMAGE...`: let eviction consider images again.
struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove pins; the content stays cached until eviction picks it.")

    @OptionGroup var options: ConfigOptions

    @Argument(help: "Images to unpin, written as they were pinned.")
    var images: [String]

    func run() async throws {
        let mirror = try openCache(options)
        defer { mirror.close() }
        var failed = 0
        for image in images {
            do {
                let (ref, removed) = try mirror.unpin(image)
                if removed { print("unpinned \(ref)") } else {
                    failed += 1
                    FileHandle.standardError.write(Data("\(ref) was not pinned\n".utf8))
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("cannot unpin \(image): \(error)\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}
