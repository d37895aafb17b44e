import CCurl
#if canImport(Glibc)
import Glibc
#endif

/// Process-wide libcurl state: global init, and a share handle so every transfer reuses the same DNS cache and
/// TLS sessions (libcurl `CURLSH` with `CURL_LOCK_DATA_DNS` and `_SSL_SESSION`).
///
/// Connections are deliberately not shared (`CURL_LOCK_DATA_CONNECT`): libcurl's shared connection cache is not
/// thread-safe (curl known bug 11.11, curl/curl#4915), and Cove runs each transfer on its own thread. Sharing it
/// closed sockets twice under concurrent transfers: the second close hit a descriptor another part of the
/// process had been given meanwhile (seen as NIO trapping on EBADF in `epoll_ctl`, and a file write failing with
/// EBADF). Each transfer opens its own connection; TLS session resumption keeps repeated handshakes cheap.
final class CurlShare: @unchecked Sendable {
    static let shared = CurlShare()

    let handle: UnsafeMutableRawPointer?
    /// One mutex per `curl_lock_data` value; libcurl calls the lock callbacks from any transfer thread.
    private let locks: UnsafeMutablePointer<pthread_mutex_t>
    private static let lockCount = 16

    private init() {
        curl_global_init(Int(CURL_GLOBAL_ALL))
        locks = .allocate(capacity: Self.lockCount)
        for i in 0..<Self.lockCount { pthread_mutex_init(locks + i, nil) }
        let share = curl_share_init()
        handle = share
        cove_curl_share_locks(share, UnsafeMutableRawPointer(locks), { _, data, _, user in
            let locks = user!.assumingMemoryBound(to: pthread_mutex_t.self)
            pthread_mutex_lock(locks + Int(data.rawValue) % 16)
        }, { _, data, user in
            let locks = user!.assumingMemoryBound(to: pthread_mutex_t.self)
            pthread_mutex_unlock(locks + Int(data.rawValue) % 16)
        })
        cove_curl_share_data(share, CURL_LOCK_DATA_DNS)
        cove_curl_share_data(share, CURL_LOCK_DATA_SSL_SESSION)
    }
}
