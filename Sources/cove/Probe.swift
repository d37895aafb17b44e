import ArgumentParser
import CoveConfig
import Foundation
import Logging
import OCI
import Upstream

/// `cove probe [REGISTRY]`: check every configured endpoint and print a short table.
struct Probe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check each configured upstream endpoint: reachability, auth flow, rate-limit headers, blob redirect target.")

    @OptionGroup var options: ConfigOptions

    @Argument(help: "Registry to probe (a configured name such as docker.io); all registries when omitted.")
    var registry: String?

    @Option(help: "Repository to HEAD a manifest of (default library/alpine on docker.io, none elsewhere).")
    var repository: String?

    @Option(help: "Tag or digest to probe.")
    var reference: String = "latest"

    func run() async throws {
        let config = try options.load()
        var registries = config.effectiveRegistries
        if let registry {
            let name = DockerHub.canonicalRegistryName(registry)
            registries = registries.filter { $0.name == name }
            guard !registries.isEmpty else {
                throw ValidationError("\(registry) is not a configured registry (\(config.registries.map(\.name).joined(separator: ", ")))")
            }
        }
        let reference = try Reference(self.reference)
        var logger = Logger(label: "cove.probe")
        logger.logLevel = .critical
        var unreachable = 0
        var rows: [[String]] = [["REGISTRY", "ENDPOINT", "TAGS", "REACHABLE", "AUTH", "MANIFEST", "RATE LIMIT", "BLOB REDIRECT", "MS"]]
        for r in registries {
            let client = RegistryClient(configuration: r, logger: logger)
            var repo = try repository.map { try RepositoryName($0) }
            if repo == nil, r.name == DockerHub.name { repo = try DockerHub.officialName(RepositoryName("alpine")) }
            let name = repo.map { client.upstreamName(for: $0) }
            for endpoint in client.endpoints {
                let p = await endpoint.client.probe(repository: name, reference: reference)
                if !p.reachable.hasPrefix("HTTP") { unreachable += 1 }
                rows.append([r.name, p.endpoint, endpoint.client.configuration.resolveTags ? "yes" : "digest only",
                             p.reachable, p.auth, p.manifest, p.rateLimit, p.blobRedirect, String(p.milliseconds)])
            }
        }
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        for row in rows {
            print(row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
        }
        // Scripts and health checks can rely on the exit status: 1 when any endpoint could not be reached.
        if unreachable > 0 { throw ExitCode(1) }
    }
}
