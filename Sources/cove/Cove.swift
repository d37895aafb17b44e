import ArgumentParser

/// `cove`: a pull-through cache for OCI / Docker Registry v2 registries.
@main
struct Cove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cove",
        abstract: "A container-registry mirror and pull-through cache.",
        version: "0.1.0",
        subcommands: [Serve.self, CheckConfig.self, Probe.self, Preload.self, Export.self, Import.self, GC.self, Pin.self, Unpin.self,
                      VerifyCLI.self, StatsCLI.self, ListCLI.self],
        defaultSubcommand: Serve.self
    )
}
