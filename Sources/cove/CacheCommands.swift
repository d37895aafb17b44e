import ArgumentParser
import CacheAdmin

// `cove gc`, `cove pin`, `cove unpin`: the eviction engine's commands, run like every maintenance command
// (`runAdmin`: in this process, or through the running server's admin socket).

/// `cove gc [--dry-run]`: evict least recently used content now.
struct GC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Evict least recently used content now, down to 90% of cache.max_size and above cache.min_free.",
        discussion: "Pinned content, content being served or filled, and (while cove serve runs) content fetched in the last two minutes are never evicted.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Flag(help: "Print what would be evicted without removing anything.")
    var dryRun = false

    func run() async throws {
        try await runAdmin(GCCommand.self, .init(dryRun: dryRun), options: options, output: output)
    }
}

/// `cove pin IMAGE...`: keep images through any eviction.
struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin images so eviction never removes them (an index pins its children).",
        discussion: "IMAGE is registry/name:tag, registry/name@digest or a short Docker Hub name (busybox:1.36). A tag pin also protects what the tag resolves to later; an image that is not cached yet is pinned for when it is pulled. Exit status 1 when any image could not be pinned.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Argument(help: "Images to pin.")
    var images: [String]

    func run() async throws {
        try await runAdmin(PinCommand.self, .init(images: images), options: options, output: output)
    }
}

/// `cove unpin IMAGE...`: let eviction consider images again.
struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove pins; the content stays cached until eviction picks it.",
        discussion: "Exit status 1 when any image was not pinned.")

    @OptionGroup var options: ConfigOptions
    @OptionGroup var output: AdminOutputOptions

    @Argument(help: "Images to unpin, written as they were pinned.")
    var images: [String]

    func run() async throws {
        try await runAdmin(UnpinCommand.self, .init(images: images), options: options, output: output)
    }
}
