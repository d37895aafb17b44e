import ArgumentParser
import CoveConfig
import Foundation
import Hummingbird
import Logging
import Mirror
import MirrorServer
import ServiceLifecycle
import Upstream

/// `cove serve`: run the mirror until SIGTERM or SIGINT, then shut down gracefully.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the registry API from the cache, filling it from the upstream.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try options.load()
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "cove")
        let upstream = UpstreamClient(configuration: config.upstream, logger: Logger(label: "cove.upstream"))
        let storage = URL(fileURLWithPath: config.storage)
        let mirror = try Mirror(storage: storage, upstream: upstream, configuration: config.cache, logger: Logger(label: "cove.mirror"))
        let app = Application(
            responder: RegistryResponder(mirror: mirror, logger: Logger(label: "cove.http")),
            configuration: .init(address: .hostname(config.listen.host, port: config.listen.port), serverName: nil),
            onServerRunning: { channel in
                logger.notice("cove listening", metadata: [
                    "address": "\(channel.localAddress.map { "\($0)" } ?? "\(config.listen)")",
                    "upstream": "\(config.upstream.url)", "storage": "\(storage.path)",
                ])
            },
            logger: Logger(label: "cove.server")
        )
        let group = ServiceGroup(configuration: .init(
            services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
