// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "buildd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "buildd-master", targets: ["buildd-master"]),
        .executable(name: "buildd-agent", targets: ["buildd-agent"]),
        // For the fuzz targets in Fuzz/ (a package of their own).
        .library(name: "BuilddShared", targets: ["BuilddShared"]),
        .library(name: "BuilddAgent", targets: ["BuilddAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries, each through a system library module.
        .systemLibrary(
            name: "CRabbitMQ",
            path: "Sources/Shared/CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"]), .brew(["rabbitmq-c"])]
        ),
        // Digests (SHA-256, launchpad-buildd's SHA-1): OpenSSL's libcrypto, which librabbitmq links already.
        .systemLibrary(
            name: "CLibCrypto",
            path: "Sources/Shared/CLibCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"]), .brew(["openssl"])]
        ),
        // TLS for the agent's HTTPS client: OpenSSL's libssl, which librabbitmq links already.
        .systemLibrary(
            name: "CLibSSL",
            path: "Sources/Shared/CLibSSL",
            pkgConfig: "libssl",
            providers: [.apt(["libssl-dev"]), .brew(["openssl"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            path: "Sources/Shared/CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        // The lifecycle core: every transition of a build and a builder, decided over values in memory.
        // No I/O: it depends on nothing (no C module, no NIO, no Hummingbird, no database code).
        .target(
            name: "BuilddCore",
            dependencies: [],
            path: "Sources/Core/BuilddCore"
        ),
        // Shared by both daemons: wire messages, configuration, logging, threads, digests (libcrypto), a
        // tiny HTTP client.
        .target(
            name: "BuilddShared",
            dependencies: ["BuilddCore", "CLibCrypto", "CLibSSL", .product(name: "Logging", package: "swift-log")],
            path: "Sources/Shared/BuilddShared"
        ),
        // The only code that touches librabbitmq.
        .target(
            name: "AMQP",
            dependencies: ["CRabbitMQ", "BuilddShared", .product(name: "Logging", package: "swift-log")],
            path: "Sources/Shared/AMQP"
        ),
        // The only code that touches libpq.
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ", "BuilddShared", .product(name: "Logging", package: "swift-log")],
            path: "Sources/Master/Postgres"
        ),
        .target(
            name: "BuilddMasterKit",
            dependencies: [
                "BuilddShared", "AMQP", "Postgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/Master/BuilddMaster"
        ),
        .executableTarget(
            name: "buildd-master",
            dependencies: [
                "BuilddMasterKit", "BuilddShared",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/Master/buildd-master"
        ),
        .target(
            name: "BuilddAgent",
            dependencies: ["BuilddShared", "AMQP", .product(name: "Logging", package: "swift-log")],
            path: "Sources/SlaveAgent/BuilddAgent"
        ),
        .executableTarget(
            name: "buildd-agent",
            dependencies: [
                "BuilddAgent", "BuilddShared",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SlaveAgent/buildd-agent"
        ),
        // `buildd-bench`: the benchmarks behind the README's Performance section (`deploy/localfarm bench`).
        .executableTarget(
            name: "buildd-bench",
            dependencies: [
                "BuilddMasterKit", "BuilddShared", "AMQP", "Postgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/buildd-bench"
        ),
        .testTarget(
            name: "UnitTests",
            dependencies: ["BuilddCore", "BuilddShared", "BuilddMasterKit", "BuilddAgent", "AMQP"],
            path: "Tests/UnitTests"
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["BuilddShared", "BuilddMasterKit", "BuilddAgent", "AMQP", "Postgres"],
            path: "Tests/IntegrationTests"
        ),
    ]
)
