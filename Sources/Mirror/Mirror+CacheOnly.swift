extension Mirror {
    /// True inside a request that may be answered only from the cache: an anonymous client under
    /// `auth.anonymous: cached`. Such a request behaves as if the mirror were offline (tags resolve from the
    /// cache without revalidation, a miss is 404 and never reaches an upstream), without changing it for
    /// anyone else. A blob fill another client already started may still be read.
    @TaskLocal public static var cacheOnlyRequest = false

    /// True when no upstream may be contacted for the current request (offline, or a cache-only request).
    var servesCacheOnly: Bool { configuration.offline || Self.cacheOnlyRequest }
}
