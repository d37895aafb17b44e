#ifndef COVE_CCURL_SHIM_H
#define COVE_CCURL_SHIM_H
#include <curl/curl.h>

// libcurl's curl_easy_setopt / curl_easy_getinfo are C variadic macros that Swift
// cannot call; these typed wrappers are the only thing this target adds.
static inline CURLcode cove_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cove_curl_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cove_curl_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode cove_curl_setopt_write(CURL *h, size_t (*f)(char *, size_t, size_t, void *)) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, f); }
static inline CURLcode cove_curl_setopt_header(CURL *h, size_t (*f)(char *, size_t, size_t, void *)) { return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, f); }
static inline CURLcode cove_curl_setopt_xferinfo(CURL *h, int (*f)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t)) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }
typedef curl_socket_t (*cove_opensocket_fn)(void *, curlsocktype, struct curl_sockaddr *);
static inline CURLcode cove_curl_setopt_opensocket(CURL *h, cove_opensocket_fn f) { return curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, f); }
typedef int (*cove_prereq_fn)(void *, char *, char *, int, int);
static inline CURLcode cove_curl_setopt_prereq(CURL *h, cove_prereq_fn f) { return curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, f); }
static inline CURLcode cove_curl_getinfo_long(CURL *h, CURLINFO i, long *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cove_curl_getinfo_off(CURL *h, CURLINFO i, curl_off_t *v) { return curl_easy_getinfo(h, i, v); }
static inline CURLcode cove_curl_getinfo_str(CURL *h, CURLINFO i, char **v) { return curl_easy_getinfo(h, i, v); }
typedef void (*cove_lock_fn)(CURL *, curl_lock_data, curl_lock_access, void *);
typedef void (*cove_unlock_fn)(CURL *, curl_lock_data, void *);
static inline void cove_curl_share_locks(CURLSH *s, void *user, cove_lock_fn lock, cove_unlock_fn unlock) {
    curl_share_setopt(s, CURLSHOPT_USERDATA, user);
    curl_share_setopt(s, CURLSHOPT_LOCKFUNC, lock);
    curl_share_setopt(s, CURLSHOPT_UNLOCKFUNC, unlock);
}
static inline void cove_curl_share_data(CURLSH *s, curl_lock_data d) { curl_share_setopt(s, CURLSHOPT_SHARE, d); }
#endif
