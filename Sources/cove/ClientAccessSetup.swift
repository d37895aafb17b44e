import Access
import ArgumentParser
import CoveConfig
import Logging
import MirrorServer

/// Builds the access gate from the configuration: htpasswd users, the anonymous mode, repository policies.
enum ClientAccessSetup {
    /// - Throws: `ValidationError` naming `auth.htpasswd`, the file and the bad line (never a hash).
    static func load(_ config: CoveConfiguration, logger: Logger) throws -> (ClientAccess, CredentialVerifier?) {
        var verifier: CredentialVerifier?
        if let auth = config.auth {
            verifier = CredentialVerifier(htpasswd: try htpasswd(auth.htpasswd))
        }
        let access = ClientAccess(verifier: verifier, anonymous: config.auth?.anonymous ?? .pull,
                                  repositories: config.repositoryPolicies, logger: logger)
        return (access, verifier)
    }

    static func htpasswd(_ path: String) throws -> Htpasswd {
        do { return try Htpasswd.load(path: path) } catch {
            throw ValidationError("config key auth.htpasswd: \(path): \(error)")
        }
    }

    /// SIGHUP: re-reads the htpasswd file; on failure keeps the current users and logs the error.
    static func reload(_ verifier: CredentialVerifier, path: String, logger: Logger) {
        do {
            let users = try Htpasswd.load(path: path)
            verifier.replace(users)
            logger.notice("htpasswd reloaded", metadata: ["file": "\(path)", "users": "\(users.users.count)"])
        } catch {
            logger.error("htpasswd reload failed; keeping the previous users", metadata: ["file": "\(path)", "error": "\(error)"])
        }
    }
}
