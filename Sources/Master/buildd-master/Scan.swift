import AMQP
import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Logging

struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one cycle of the scanner, as the original cron-driven master did, and print what it did.",
        discussion: """
            For every arch series: set up its builders (or print "Unable to setup builder for D/S/A."); then scan
            the active builds (unaccepted claims, expired leases, pending aborts); then sort the waiting builds
            by processor and dispatch each processor's best within its window. `serve` runs the same steps
            continuously.
            """)

    @Flag(help: "Run one cycle and exit (required; `serve` runs continuously).") var once = false
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Base URL agents use to reach a master's artifact store.") var publicURL = "http://127.0.0.1:8080"
    @Option(help: "Seconds a published job may wait to be accepted.") var acceptTimeout = 30
    @Option(help: "Seconds a heartbeat keeps a build's lease.") var lease = 30
    @Option(help: "Jobs published per processor beyond its idle builders.") var lookahead = 1
    @OptionGroup var queueType: QueueTypeOptions

    func validate() throws {
        guard once else { throw ValidationError("only --once is supported; run `buildd-master serve` for a daemon") }
    }

    func run() async throws {
        var configuration = MasterConfiguration(databaseURL: try connection.databaseURL(),
                                                brokerURL: try connection.optionalBrokerURL() ?? "")
        configuration.publicURL = publicURL
        configuration.acceptTimeoutSeconds = acceptTimeout
        configuration.leaseSeconds = lease
        configuration.lookahead = lookahead
        configuration.queueType = try queueType.resolved()
        var logger = Logger(label: "buildd.scan")
        logger.logLevel = .warning
        let store = try connection.store()
        defer { store.shutdown() }
        try await store.requireCurrentSchema()
        var broker: AMQPClient?
        if let url = try connection.optionalBrokerURL() {
            let queueType = configuration.queueType
            let client = AMQPClient(configuration: try AMQPConfiguration(url: url, connectionName: "buildd-scan"),
                                    logger: logger) { try BrokerTopology.declareMaster(on: $0, queueType: queueType) }
            client.start()
            try await client.waitUntilConnected(timeout: .seconds(10))
            for processor in try await store.processorNames() {
                try await client.perform {
                    try BrokerTopology.declareJobQueue(processor: processor, on: $0, queueType: queueType)
                }
            }
            broker = client
        } else {
            print("no broker configured: scanning without dispatching")
        }
        let master = BuilddMaster(store: store, broker: broker, configuration: configuration, logger: logger,
                                  waitForBrokerBeforeLeases: false)
        for archSeries in try await store.archSeries() {
            master.addDistroArchRelease(archSeries)
            do {
                try await master.setupBuilders(archSeries)
                let group = master.archReleases[archSeries]!
                print("\(archSeries): \(group.builders.count) builder(s), \(await group.countAvailable()) available")
            } catch let error as NoBuildersError {
                print(error.description)
            }
        }
        let report = try await master.scanActiveBuilders()
        print("scanned: \(report.reclaimed.count) unaccepted job(s) requeued, \(report.leasesExpired.count) expired "
              + "lease(s), \(report.abortsSent.count) abort(s) sent")
        for (processor, items) in try await master.sortAndSplitByProcessor().sorted(by: { $0.key < $1.key }) {
            let jobs = try await master.dispatchByProcessor(processor, items)
            print("\(processor): \(items.count) waiting at the head of the queue, dispatched "
                  + (jobs.isEmpty ? "none" : jobs.map { "\($0.buildID)" }.joined(separator: ", ")))
        }
        await broker?.shutdown()
    }
}
