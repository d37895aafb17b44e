import CCurl
#if canImport(Glibc)
import Glibc
#endif

/// Process-wide libcurl state: global init, and a share handle so every transfer reuses the same connection
/// pool, DNS cache and TLS sessions (libcurl `CURLSH` with `CURL_LOCK_DATA_CONNECT`, `_DNS`, `_SSL_SESSION`).
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
        cove_curl_share_data(share, CURL_LOCK_DATA_CONNECT)
        cove_curl_share_data(share, CURL_LOCK_DATA_DNS)
        cove_curl_share_data(share, CURL_LOCK_DATA_SSL_SESSION)
    }
}
