import AMQP
import BuilddShared
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import NIOSSL
import Logging
import Postgres
import Prometheus
import ServiceLifecycle

/// `buildd-master serve`: the dispatcher, event consumer, watchdog and HTTP API in one process.
///
/// Every part is a task of ``run()``; SIGTERM/SIGINT stop them gracefully: the consumer stops taking
/// events (an unacked one is redelivered to another master), the broker and database connections close.
public final class MasterDaemon: Service {
    public let configuration: MasterConfiguration
    let logger: Logger
    let metrics: PrometheusCollectorRegistry?
    let intake: StatusShardIntake

    /// - Parameter metrics: the registry swift-metrics was bootstrapped with, exported at `/metrics`.
    public init(configuration: MasterConfiguration, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        intake = StatusShardIntake(leaseSeconds: configuration.leaseSeconds)
    }

    /// Runs the master with an HTTP server until SIGTERM or SIGINT.
    public func runUntilSignalled() async throws {
        let store = BuilddStore(url: configuration.databaseURL, connections: configuration.databaseConnections,
                                applicationName: "buildd-master \(configuration.name)",
                                settings: BuilddStore.masterSessionSettings(leaseSeconds: configuration.leaseSeconds))
        if case .newerServable(let version) = try await store.requireCurrentSchema() {
            logger.notice("serving a newer schema", metadata: [
                "schema": "\(version)", "own_schema": "\(Migrations.latestVersion)", "release": "\(BuilddRelease.version)"])
        }
        let artifacts = try ArtifactStore(root: configuration.artifactDirectory)
        let broker = try makeBroker()
        var apiLogger = logger
        apiLogger[metadataKey: "component"] = "http"
        var api = HTTPAPI(store: store, artifacts: artifacts, broker: broker, maxArtifactBytes: configuration.maxArtifactBytes,
                          metrics: metrics, logger: apiLogger, anonymousRead: configuration.anonymousRead,
                          secureCookies: configuration.tls != nil || configuration.artifactBaseURL.hasPrefix("https://"),
                          intake: intake, maxUploadBytes: configuration.maxUploadBytes,
                          samplePeriod: configuration.sampleInterval)
        if let management = configuration.brokerManagementURL {
            let vhost = try AMQPConfiguration(url: configuration.brokerURL).vhost
            api.enrolment = EnrolmentSettings(
                management: BrokerManagement(url: management, vhost: vhost), brokerURL: configuration.brokerURL,
                queueType: configuration.queueType,
                masterURLs: configuration.enrolMasterURLs ?? [configuration.artifactBaseURL])
        }
        var httpLogger = logger
        httpLogger.logLevel = .warning
        let app = Application(
            router: api.makeRouter(),
            server: try Self.httpServer(tls: configuration.tls),
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort),
                                 serverName: "buildd-master"),
            onServerRunning: { [logger] channel in
                // What supervisors and tests wait for: this process, not another, holds the port.
                logger.info("http listening", metadata: ["http": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            },
            logger: httpLogger)
        let core = MasterCore(configuration: configuration, store: store, broker: broker, artifacts: artifacts,
                              intake: intake, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: app), .init(service: core)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        logger.info("master starting", metadata: [
            "http": "\(configuration.tls == nil ? "http" : "https")://\(configuration.httpHost):\(configuration.httpPort)",
            "anonymous_read": "\(configuration.anonymousRead)", "artifacts": "\(configuration.artifactDirectory)",
            "broker.url": "\(broker.configuration.url)"])
        for warning in configuration.warnings { logger.warning("insecure setting", metadata: ["warning": "\(warning)"]) }
        try await group.run()
        store.shutdown()
        logger.info("master stopped")
    }

    public func run() async throws { try await runUntilSignalled() }

    /// HTTP/1.1, over TLS (1.2 or later, swift-nio-ssl's BoringSSL) when a certificate and key are given.
    static func httpServer(tls: (certificate: String, key: String)?) throws -> HTTPServerBuilder {
        guard let tls else { return .http1() }
        let chain = try NIOSSLCertificate.fromPEMFile(tls.certificate).map { NIOSSLCertificateSource.certificate($0) }
        guard !chain.isEmpty else { throw MasterTLSError("no certificate in \(tls.certificate)") }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: tls.key, format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        return try .tls(.http1(), tlsConfiguration: configuration)
    }

    /// The AMQP heartbeat a master asks for. The broker hands a master's status shards to another master when
    /// it notices the master is gone - cut off, or stuck - after about two heartbeats without a frame; a third
    /// of the lease (2 to 10 s) makes that happen before the leases of the builders those shards carry run out.
    public static func brokerHeartbeat(leaseSeconds: Int) -> Duration { .seconds(min(10, max(2, leaseSeconds / 3))) }

    func makeBroker() throws -> AMQPClient {
        var amqp = try AMQPConfiguration(url: configuration.brokerURL, connectionName: "buildd-master-\(configuration.name)")
        amqp.heartbeat = Self.brokerHeartbeat(leaseSeconds: configuration.leaseSeconds)
        let queueType = configuration.queueType
        let intake = self.intake
        return AMQPClient(configuration: amqp, logger: logger) { connection in
            try BrokerTopology.declareMaster(on: connection, queueType: queueType)
            try connection.qos(prefetch: 64, channel: AMQPClient.consumeChannel)
            try intake.consumeIfOn(connection)
        }
    }
}

/// The master's loops, sharing one store and one broker connection.
public final class MasterCore: Service {
    let configuration: MasterConfiguration
    let store: BuilddStore
    let broker: AMQPClient
    let logger: Logger
    public let master: BuilddMaster
    public let dispatcher: Dispatcher
    public let legacy: LegacyAdapter
    let intake: StatusShardIntake

    public init(configuration: MasterConfiguration, store: BuilddStore, broker: AMQPClient, artifacts: ArtifactStore,
                intake: StatusShardIntake, logger: Logger) {
        self.configuration = configuration
        self.intake = intake
        self.store = store
        self.broker = broker
        self.logger = logger
        master = BuilddMaster(store: store, broker: broker, configuration: configuration, logger: logger)
        dispatcher = Dispatcher(master: master, store: store, broker: broker, configuration: configuration, logger: logger)
        legacy = LegacyAdapter(store: store, broker: broker, artifacts: artifacts, master: configuration, logger: logger)
    }

    public func run() async throws {
        broker.start()
        let listener = PostgresListener(url: configuration.databaseURL, channels: ["buildd_queue"], logger: logger)
        let dispatcher = self.dispatcher
        let consumer = EventConsumer(master: master, store: store, broker: broker, configuration: configuration,
                                     intake: intake, logger: logger) { dispatcher.wake.signal() }
        let watchdog = Watchdog(master: master, store: store, configuration: configuration, logger: logger) {
            dispatcher.wake.signal()
        }
        let tick = configuration.tick
        let broker = self.broker
        let depWaits = DepWaitRetrier(store: store, interval: configuration.depWaitInterval, logger: logger)
        let publisher = EventPublisher(store: store, broker: broker, name: configuration.name,
                                       buildLeaseSeconds: configuration.leaseSeconds, logger: logger)
        let sampler = FarmSampler(store: store, interval: configuration.sampleInterval, logger: logger)
        let webhooks = WebhookDeliverer(store: store, name: configuration.name, buildLeaseSeconds: configuration.leaseSeconds,
                                        giveUpAfter: configuration.webhookGiveUpSeconds, logger: logger)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await dispatcher.run() }
                group.addTask { await publisher.run() }
                group.addTask { await webhooks.run() }
                group.addTask { await consumer.run() }
                group.addTask { await consumer.resumeWhenTheDatabaseAnswers() }
                group.addTask { await watchdog.run() }
                group.addTask { await depWaits.run() }
                group.addTask { await sampler.run() }
                group.addTask { await self.legacy.run() }
                group.addTask {
                    for await _ in listener.notifications { dispatcher.wake.signal() }
                }
                group.addTask {
                    for await event in broker.connectionEvents {
                        if case .connected = event { dispatcher.wake.signal() }
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        dispatcher.wake.signal()
                        try? await Task.sleep(for: tick)
                    }
                }
                await group.waitForAll()
            }
        }
        listener.shutdown()
        await broker.shutdown()
    }
}

struct MasterTLSError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
