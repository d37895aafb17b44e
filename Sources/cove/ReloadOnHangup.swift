import Logging
import ServiceLifecycle
import UnixSignals

/// Re-reads files on SIGHUP (the TLS certificate and key, the htpasswd file) without stopping the server.
///
/// ServiceLifecycle handles only the signals it is given, and SIGHUP's default action ends the process; this
/// service traps it for as long as the server runs.
struct ReloadOnHangup: Service {
    let actions: [@Sendable () -> Void]
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                logger.notice("SIGHUP: reloading TLS certificate and htpasswd")
                for action in actions { action() }
            }
        }
    }
}
