// swift-tools-version:6.1
// Cove: a pull-through cache for OCI / Docker Registry v2 registries.
// Targets and their rules: docs/ARCHITECTURE.md. Dependencies point down:
// cove → {MirrorServer, CacheAdmin} → Mirror → {Upstream, BlobStore, CacheIndex} → OCI; CacheAdmin → OCIBundle → OCI;
// {cove, MirrorServer, CoveConfig} → Access (htpasswd, bcrypt, repository patterns; no other Cove target).
import PackageDescription

let package = Package(
    name: "Cove",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "cove", targets: ["cove"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            path: "Sources/CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(
            name: "OCI",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(name: "OCIBundle", dependencies: ["OCI"]),
        .target(
            name: "CacheIndex",
            dependencies: ["OCI", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "BlobStore",
            dependencies: ["OCI", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "Upstream",
            dependencies: ["OCI", "CCurl", .product(name: "Logging", package: "swift-log"), .product(name: "Metrics", package: "swift-metrics")]
        ),
        .target(
            name: "Mirror",
            dependencies: [
                "OCI", "CacheIndex", "BlobStore", "Upstream",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "Access",
            dependencies: [
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CacheAdmin",
            dependencies: [
                "OCI", "Mirror", "BlobStore", "CacheIndex", "OCIBundle",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "MirrorServer",
            dependencies: [
                "OCI", "Mirror", "Access", "BlobStore", "Upstream",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "CoveConfig",
            dependencies: ["OCI", "Mirror", "Upstream", "Access", .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "cove",
            dependencies: [
                "OCI", "Mirror", "MirrorServer", "Upstream", "CoveConfig", "BlobStore", "CacheAdmin", "Access",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "OCIBundleTests", dependencies: ["OCIBundle", "OCI"]),
        .testTarget(name: "BlobStoreTests", dependencies: ["BlobStore", "OCI"]),
        .testTarget(name: "UpstreamTests", dependencies: ["Upstream", "OCI", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "CoveConfigTests", dependencies: ["CoveConfig", "Upstream", "Mirror", "Access"]),
        .testTarget(name: "AccessTests", dependencies: ["Access", .product(name: "HummingbirdBcrypt", package: "hummingbird-auth")]),
        .testTarget(
            name: "MirrorServerTests",
            dependencies: [
                "MirrorServer", "Mirror", "BlobStore", "CacheIndex", "OCI", "Upstream", "CacheAdmin", "OCIBundle", "Access",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["OCI"],
            exclude: ["Fixtures", "README.md"]
        ),
    ]
)
