import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation
import Logging
import Metrics
import Prometheus

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the master: dispatcher, event consumer, watchdog, artifact store and HTTP API.",
        discussion: """
            Any number of masters may run against one database and broker. SIGTERM or SIGINT stops it gracefully.
            Logs are logfmt lines on standard error.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Address of the HTTP server.") var httpHost = "127.0.0.1"
    @Option(help: "Port of the HTTP server.") var httpPort = 8080
    @Option(help: "PEM certificate chain of the HTTPS listener (default: $BUILDD_TLS_CERTIFICATE); with --tls-key.")
    var tlsCertificate: String?
    @Option(help: "PEM private key of the HTTPS listener (default: $BUILDD_TLS_KEY).") var tlsKey: String?
    @Option(help: """
        on: anyone who reaches the port reads public builds; off: every read needs a token (pages take it \
        from the sign-in form). Private builds always need a viewer token (default: $BUILDD_ANONYMOUS_READ, else on).
        """)
    var anonymousRead: String?
    @Option(help: """
        Base URL agents and legacy builders use to reach this master, written as agents list it under \
        [master] url (default: $BUILDD_PUBLIC_URL or the configuration file's, else http://HOST:PORT).
        """)
    var publicURL: String?
    @OptionGroup var artifactStore: ArtifactOptions
    @Option(help: """
        The broker's management API as http(s)://ADMIN:PASSWORD@HOST:15672, with a user that may create users \
        on the vhost: build machines then enrol themselves with join tokens (POST /v1/enrol; default: \
        $BUILDD_BROKER_MANAGEMENT_URL, which belongs in master.env - never on a command line).
        """)
    var brokerManagementURL: String?
    @Option(help: """
        Every master's URL, comma-separated, as enrolled machines list them under [master] url (default: \
        $BUILDD_ENROL_MASTER_URLS, else this master's public URL).
        """)
    var enrolMasterURLs: String?
    @Option(help: "Seconds a heartbeat keeps a build's lease.") var lease = 30
    @Option(help: "Largest file (result, log) an upload may bring, in bytes (default 4 GiB).")
    var maxArtifactBytes: Int64 = 4 << 30
    @Option(help: "Largest source file a submitter may upload (PUT /v1/uploads), in bytes (default 2 GiB).")
    var maxUpload: Int64 = 2 << 30
    @Option(help: "Seconds a published job may wait to be accepted.") var acceptTimeout = 30
    @Option(help: "Seconds between dep-wait passes: MANUALDEPWAIT builds are retried once their archives' Packages indexes satisfy what they miss.")
    var depWaitInterval = 300
    @Option(help: "Seconds between two samples of the farm for the plots (queue, waits, builders, builds ended); the first master to come takes each.")
    var sampleInterval = 60
    @Option(help: "How long a webhook may fail (retried with backoff) before it is disabled: e.g. 24h, 90m, 30s.")
    var webhookGiveUp = "24h"
    @Option(help: "Jobs published per processor beyond its idle builders.") var lookahead = 1
    @OptionGroup var queueType: QueueTypeOptions
    @Option(help: "This master's name: in logs, and what the live masters share the legacy builders out by (one name per master; default: the host name).")
    var name = ProcessInfo.processInfo.hostName
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @Option(help: "Database connections of this master (each on a thread of its own).") var databaseConnections = 8
    @Option(help: "Status events applied at once (lanes by builder; one builder's events stay in order).")
    var eventLanes = 4
    @Option(help: "Most status events one lane applies in one transaction.") var eventBatch = 64
    @Option(help: "Seconds between two polls of a legacy (launchpad-buildd) builder.") var legacyInterval = 5.0
    @Option(help: "Seconds a legacy builder's XML-RPC call may take (ensurepresent and file fetches: 20 times that).")
    var legacyCallTimeout = 40.0
    @Option(help: "Seconds a legacy builder may stay BUILDING with an unchanged log tail before it counts as wedged.")
    var legacySilentBuild = 10800.0
    @Option(help: "Seconds a legacy builder may stay ABORTING before it counts as wedged.") var legacyAbortDeadline = 180.0

    func validate() throws {
        guard (1...65535).contains(httpPort) else { throw ValidationError("--http-port must be 1-65535") }
        guard lease >= 5 else { throw ValidationError("--lease must be at least 5 seconds") }
        guard maxArtifactBytes >= 1 else { throw ValidationError("--max-artifact-bytes must be positive") }
        guard maxUpload >= 1 else { throw ValidationError("--max-upload must be positive") }
        guard Self.seconds(webhookGiveUp) != nil else {
            throw ValidationError("--webhook-give-up must be a duration like 24h, 90m or 30s")
        }
        guard acceptTimeout >= 2 else { throw ValidationError("--accept-timeout must be at least 2 seconds") }
        guard depWaitInterval >= 1 else { throw ValidationError("--dep-wait-interval must be at least 1 second") }
        guard (1...3600).contains(sampleInterval) else { throw ValidationError("--sample-interval must be 1-3600 seconds") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard (1...64).contains(databaseConnections) else { throw ValidationError("--database-connections must be 1-64") }
        guard (1...32).contains(eventLanes) else { throw ValidationError("--event-lanes must be 1-32") }
        guard (1...1000).contains(eventBatch) else { throw ValidationError("--event-batch must be 1-1000") }
        guard legacyInterval >= 0.1 else { throw ValidationError("--legacy-interval must be at least 0.1 seconds") }
        _ = try queueType.resolved()
        _ = try artifactStore.directory(mustExist: false)
        _ = try tls()
        _ = try anonymousReading()
        guard legacyCallTimeout > 0, legacySilentBuild > 0, legacyAbortDeadline > 0 else {
            throw ValidationError("legacy timeouts and deadlines must be positive")
        }
    }

    /// The certificate and key, both or neither.
    func tls() throws -> (certificate: String, key: String)? {
        try Self.tls(certificate: tlsCertificate, key: tlsKey)
    }

    /// The HTTPS certificate and key from the flags given, else the settings; both or neither, each readable
    /// (`serve`, and `check-config` without flags).
    static func tls(certificate certificateFlag: String?, key keyFlag: String?) throws -> (certificate: String, key: String)? {
        let certificate = try certificateFlag ?? MasterSettings.value("BUILDD_TLS_CERTIFICATE")
        let key = try keyFlag ?? MasterSettings.value("BUILDD_TLS_KEY")
        switch (certificate, key) {
        case (nil, nil): return nil
        case (let certificate?, let key?):
            for path in [certificate, key] where !FileManager.default.isReadableFile(atPath: path) {
                throw ValidationError("cannot read \(path)")
            }
            return (certificate, key)
        default: throw ValidationError("--tls-certificate and --tls-key go together")
        }
    }

    func anonymousReading() throws -> Bool {
        switch try anonymousRead ?? MasterSettings.value("BUILDD_ANONYMOUS_READ") ?? "on" {
        case "on", "true", "yes": return true
        case "off", "false", "no": return false
        case let other: throw ValidationError("--anonymous-read must be on or off, not \(other)")
        }
    }

    func run() async throws {
        StructuredLogHandler.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        var configuration = MasterConfiguration(databaseURL: try connection.databaseURL(),
                                                brokerURL: try connection.brokerURL())
        configuration.httpHost = httpHost
        configuration.httpPort = httpPort
        configuration.publicURL = try publicURL ?? MasterSettings.value("BUILDD_PUBLIC_URL")
        configuration.tls = try tls()
        configuration.anonymousRead = try anonymousReading()
        configuration.artifactDirectory = try artifactStore.directory(mustExist: false)
        configuration.leaseSeconds = lease
        configuration.brokerManagementURL = try brokerManagementURL ?? MasterSettings.value("BUILDD_BROKER_MANAGEMENT_URL")
        configuration.enrolMasterURLs = try (enrolMasterURLs ?? MasterSettings.value("BUILDD_ENROL_MASTER_URLS"))
            .map { $0.split(separator: ",").map { $0.trimmed(" ") }.filter { !$0.isEmpty } }
        configuration.maxArtifactBytes = maxArtifactBytes
        configuration.maxUploadBytes = maxUpload
        configuration.webhookGiveUpSeconds = Double(Self.seconds(webhookGiveUp) ?? 86400)
        configuration.acceptTimeoutSeconds = acceptTimeout
        configuration.depWaitInterval = .seconds(depWaitInterval)
        configuration.sampleInterval = .seconds(sampleInterval)
        configuration.lookahead = lookahead
        configuration.queueType = try queueType.resolved()
        configuration.name = name
        configuration.databaseConnections = databaseConnections
        configuration.eventLanes = eventLanes
        configuration.eventBatch = eventBatch
        configuration.legacy.pollInterval = .milliseconds(Int64(legacyInterval * 1000))
        configuration.legacy.limits.callTimeout = legacyCallTimeout
        configuration.legacy.limits.maxFileBytes = Int(configuration.maxArtifactBytes)
        configuration.legacy.deadlines = .init(silentBuild: legacySilentBuild, aborting: legacyAbortDeadline)
        var logger = Logger(label: "buildd.master")
        logger[metadataKey: "master"] = "\(name)"
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5), .seconds(30),
            .seconds(60), .seconds(300), .seconds(900), .seconds(3600), .seconds(4 * 3600), .seconds(24 * 3600),
        ]
        MetricsSystem.bootstrap(factory)
        try await MasterDaemon(configuration: configuration, logger: logger, metrics: registry).runUntilSignalled()
    }

    /// Seconds of a duration like `24h`, `90m`, `30s` or `2d` (``TokenCommand/Add/seconds(_:)``'s form).
    static func seconds(_ text: String) -> Int? { try? TokenCommand.Add.seconds(text) }
}
