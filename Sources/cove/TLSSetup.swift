import Access
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import MirrorServer
import NIOCore
import NIOSSL
import Synchronization

/// The listener's certificate and key (`tls:`), loaded at start and replaced on SIGHUP.
///
/// Each new connection takes the context current when it is accepted (`ReloadableTLSChannel`), so a reload
/// changes what new connections see and leaves established ones alone. A reload that fails (unreadable file,
/// bad PEM, key not matching the certificate) keeps the old pair and logs an error naming the file.
final class ListenerCertificates: Sendable {
    let files: TLSFiles
    private let current: Mutex<NIOSSLContext>

    /// - Throws: `TLSSetupError` naming the key (`tls.certificate`/`tls.key`) and the file.
    init(files: TLSFiles) throws(TLSSetupError) {
        self.files = files
        current = Mutex(try Self.makeContext(files))
    }

    /// The context for a connection accepted now.
    var context: NIOSSLContext { current.withLock { $0 } }

    /// Re-reads both files; on failure keeps serving with the old pair.
    /// - Returns: true when the new pair is in use.
    @discardableResult
    func reload(logger: Logger) -> Bool {
        do {
            let context = try Self.makeContext(files)
            current.withLock { $0 = context }
            logger.notice("TLS certificate reloaded", metadata: ["certificate": "\(files.certificate)"])
            return true
        } catch {
            logger.error("TLS reload failed; still serving the previous certificate", metadata: ["error": "\(error)"])
            return false
        }
    }

    /// Seconds a closing TLS connection waits for the client's `close_notify` before it closes the socket anyway
    /// (NIOSSL's default is 5 s). A client that stopped reading never answers, and at shutdown that wait came on
    /// top of `shutdown_timeout` (past systemd's `TimeoutStopSec`); `cove serve` takes it out of the shutdown
    /// budget instead.
    static let closeWait = 1.0

    /// A server context for the files: TLS 1.2 or later, HTTP/1.1 only (ALPN), the chain leaf first.
    static func makeContext(_ files: TLSFiles) throws(TLSSetupError) -> NIOSSLContext {
        let chainBytes = try read(files.certificate, key: "tls.certificate")
        let keyBytes = try read(files.key, key: "tls.key")
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMBytes(chainBytes) } catch {
            throw TLSSetupError(key: "tls.certificate", path: files.certificate, "is not a PEM certificate chain (\(error))")
        }
        guard !chain.isEmpty else { throw TLSSetupError(key: "tls.certificate", path: files.certificate, "holds no PEM certificate") }
        let privateKey: NIOSSLPrivateKey
        do { privateKey = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem) } catch {
            throw TLSSetupError(key: "tls.key", path: files.key, "is not an unencrypted PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                     privateKey: .privateKey(privateKey))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        configuration.shutdownTimeout = .milliseconds(Int64(closeWait * 1000))
        do { return try NIOSSLContext(configuration: configuration) } catch {
            throw TLSSetupError(key: "tls.key", path: files.key, "does not match the certificate in \(files.certificate) (\(error))")
        }
    }

    private static func read(_ path: String, key: String) throws(TLSSetupError) -> [UInt8] {
        guard let data = FileManager.default.contents(atPath: path) else { throw TLSSetupError(key: key, path: path, "cannot be read") }
        return Array(data)
    }
}

/// A TLS file that cannot be used: which key, which file, what is wrong. Never holds key material.
struct TLSSetupError: Error, CustomStringConvertible {
    let key: String
    let path: String
    let message: String
    init(key: String, path: String, _ message: String) {
        self.key = key
        self.path = path
        self.message = message
    }
    var description: String { "config key \(key): \(path) \(message)" }
}

/// HummingbirdTLS's `TLSChannel` builds one `NIOSSLContext` at start; this one asks `ListenerCertificates`
/// for the current context per accepted connection, then sets up the HTTP channel exactly as without TLS.
struct ReloadableTLSChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value
    let base: Base
    let certificates: ListenerCertificates

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let context = certificates.context
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 (as `.http1(configuration:)`), over TLS with the certificates current at each accept when
    /// `certificates` is set. Without TLS, cached blobs go out with sendfile (`SendfileHTTP1Channel`); over TLS
    /// they are read and encrypted (NIOSSL takes no file regions), so the TLS channel wraps the plain one.
    static func http1(configuration: HTTP1Channel.Configuration, certificates: ListenerCertificates?) -> HTTPServerBuilder {
        guard let certificates else { return .http1Sendfile(configuration: configuration) }
        return HTTPServerBuilder { responder in
            ReloadableTLSChannel(base: HTTP1Channel(responder: responder, configuration: configuration), certificates: certificates)
        }
    }
}
