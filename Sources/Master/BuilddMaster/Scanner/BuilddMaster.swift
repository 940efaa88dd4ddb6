import AMQP
import BuilddCore
import BuilddShared
import Logging
import Synchronization

/// DISTRO/SERIES/ARCHTAG and the processor that builds it (the seed's DistroArchRelease).
public struct DistroArchSeries: Hashable, Sendable, CustomStringConvertible {
    public let distribution: String
    public let series: String
    public let archTag: String
    public let processor: String

    public init(distribution: String, series: String, archTag: String, processor: String) {
        self.distribution = distribution
        self.series = series
        self.archTag = archTag
        self.processor = processor
    }

    public var description: String { "\(distribution)/\(series)/\(archTag)" }
}

/// No builder serves the processor of an arch series.
public struct NoBuildersError: Error, CustomStringConvertible, Equatable {
    public let archSeries: DistroArchSeries
    public var description: String { "Unable to setup builder for \(archSeries)." }
}

/// A waiting build at the head of its processor's queue.
public struct QueueItem: Sendable, Equatable {
    public let buildID: Int64
    public let processor: String
    public let score: Int
}

/// What one ``BuilddMaster/scanActiveBuilders()`` did.
public struct ScanReport: Sendable, Equatable {
    public var reclaimed: [Int64] = []
    public var leasesExpired: [Int64] = []
    public var abortsSent: [Int64] = []
    public var changed: Bool { !reclaimed.isEmpty || !leasesExpired.isEmpty }

    public init() {}
}

/// The seed's build master: one cycle is `addDistroArchRelease`/`setupBuilders` for every arch series,
/// `scanActiveBuilders`, `sortAndSplitByProcessor` and `dispatchByProcessor` for each processor.
/// `buildd-master scan --once` runs one cycle; `serve` runs the scan and the dispatch continuously.
public final class BuilddMaster: Sendable {
    let store: BuilddStore
    let broker: AMQPClient?
    let configuration: MasterConfiguration
    let logger: Logger
    private let state = Mutex<(archSeries: [DistroArchSeries], groups: [DistroArchSeries: BuilderGroup])>(([], [:]))
    /// Whether the last scan judged leases (nil before the first).
    private let leaseJudgement = Mutex<Bool?>(nil)

    /// Whether leases wait until ``LeaseJudgement`` allows them (daemons); a one-shot scan judges them at once.
    let waitForBrokerBeforeLeases: Bool

    public init(store: BuilddStore, broker: AMQPClient?, configuration: MasterConfiguration, logger: Logger,
                waitForBrokerBeforeLeases: Bool = true) {
        self.waitForBrokerBeforeLeases = waitForBrokerBeforeLeases
        self.store = store
        self.broker = broker
        self.configuration = configuration
        self.logger = logger
    }

    /// Arch series added so far.
    public var archSeries: [DistroArchSeries] { state.withLock { $0.archSeries } }

    /// The builder groups set up so far, by arch series (the seed's `_archreleases`).
    public var archReleases: [DistroArchSeries: BuilderGroup] { state.withLock { $0.groups } }

    public func addDistroArchRelease(_ archSeries: DistroArchSeries) {
        state.withLock { if !$0.archSeries.contains(archSeries) { $0.archSeries.append(archSeries) } }
    }

    /// Finds the builders of the arch series' processor and makes their group.
    /// - Throws: ``NoBuildersError`` when no builder serves that processor.
    public func setupBuilders(_ archSeries: DistroArchSeries) async throws {
        let builders = try await store.builders().filter { $0.processors.contains(archSeries.processor) && $0.active }
        guard !builders.isEmpty else { throw NoBuildersError(archSeries: archSeries) }
        let silence = Double(BuilddStore.agentSilenceSeconds)
        let group = BuilderGroup(logger: logger, store: store, builders: builders.map { summary in
            ScannedBuilder(name: summary.name,
                           slave: AgentSlave(summary: summary, silentAfterSeconds: silence),
                           builderok: summary.builderok, failnotes: summary.failnotes)
        })
        state.withLock { $0.groups[archSeries] = group }
    }

    /// Follows the builds in progress: claims nobody accepted go back to the queue, builds whose lease ran
    /// out are failures, cancelling builds' builders are told (again) to abort. (Agents push their results;
    /// legacy builders are polled by their adapter.)
    ///
    /// Leases are judged only when ``LeaseJudgement`` says so: once this master's broker connection has been
    /// up for a whole lease plus an agent's longest reconnect wait. While the broker is away no heartbeat can
    /// arrive, and a broker restart or outage must not requeue every build.
    public func scanActiveBuilders() async throws -> ScanReport {
        var report = ScanReport()
        let leasesJudgeable = !waitForBrokerBeforeLeases
            || broker.map { LeaseJudgement.judgeable(brokerConnectedFor: $0.connectedFor?.inSeconds,
                                                     lease: Double(configuration.leaseSeconds),
                                                     reconnectWait: AMQPClient.longestReconnectWait.inSeconds) } ?? true
        noteLeaseJudgement(leasesJudgeable)
        report.reclaimed = try await store.expireClaims(olderThanSeconds: configuration.acceptTimeoutSeconds)
        for build in report.reclaimed {
            logger.warning("job not accepted in time, queued again", metadata: ["build.id": "\(build)"])
        }
        for lease in leasesJudgeable ? try await store.expireLeases() : [] {
            report.leasesExpired.append(lease.buildID)
            logger.warning("lease expired, build requeued", metadata: [
                "build.id": "\(lease.buildID)", "build.attempt": "\(lease.attempt)", "builder.name": "\(lease.builder)"])
            await sendAbort(builder: lease.builder, buildID: lease.buildID, attempt: Int32(lease.attempt),
                            reason: "lease expired")
        }
        for abort in try await store.abortsDue() {
            report.abortsSent.append(abort.buildID)
            logger.info("asking builder to abort a cancelled build", metadata: [
                "build.id": "\(abort.buildID)", "build.attempt": "\(abort.attempt)", "builder.name": "\(abort.builder)"])
            await sendAbort(builder: abort.builder, buildID: abort.buildID, attempt: abort.attempt,
                            reason: "cancelled by an operator")
        }
        return report
    }

    /// Logs when lease judgement stops (the broker connection went down) and starts again.
    private func noteLeaseJudgement(_ judgeable: Bool) {
        let last = leaseJudgement.withLock { last -> Bool? in
            defer { last = judgeable }
            return last
        }
        guard last != judgeable else { return }
        if judgeable {
            guard last != nil else { return }
            logger.info("leases judged again: the broker connection has been up long enough for every agent to speak")
        } else {
            let window = LeaseJudgement.window(lease: Double(configuration.leaseSeconds),
                                               reconnectWait: AMQPClient.longestReconnectWait.inSeconds)
            logger.log(level: last == nil ? .info : .warning,
                       "leases not judged until the broker connection has been up for \(Int(window)) s",
                       metadata: ["lease.seconds": "\(configuration.leaseSeconds)"])
        }
    }

    /// The head of each processor's queue, best first: at most `limit` items per processor, read through
    /// the score index (cheap with a million waiting builds).
    public func sortAndSplitByProcessor(limit: Int = 64) async throws -> [String: [QueueItem]] {
        let rows = try await store.database.query("""
            SELECT p.name, q.build_id, q.lastscore FROM processor p
             CROSS JOIN LATERAL (SELECT build_id, lastscore, id FROM buildqueue
                                  WHERE processor_id = p.id AND state = 'WAITING'
                                  ORDER BY lastscore DESC, id LIMIT $1) q
             ORDER BY p.name, q.lastscore DESC, q.id
            """, [limit]).rows
        var split: [String: [QueueItem]] = [:]
        for row in rows {
            let processor = try row.string("name")
            split[processor, default: []].append(
                QueueItem(buildID: try row.int64("build_id"), processor: processor, score: try row.int("lastscore")))
        }
        return split
    }

    /// Dispatches the best of `items` that fit the processor's window: claims them (a build another
    /// master took meanwhile is skipped) and publishes their jobs in score order with confirms.
    /// - Returns: the jobs published.
    @discardableResult
    public func dispatchByProcessor(_ processor: String, _ items: [QueueItem]) async throws -> [JobMessage] {
        guard !items.isEmpty else { return [] }
        return try await dispatch(processor: processor)
    }

    /// Claims what fits the processor's window and publishes it (``dispatchByProcessor(_:_:)`` without
    /// looking at the queue first: the claim itself finds the best waiting builds). With `addressed`, the
    /// processor has builders that do not take its shared queue: each idle one is then sent the best build
    /// it may take, on its own control queue (``Placement``).
    @discardableResult
    public func dispatch(processor: String, addressed: Bool = false) async throws -> [JobMessage] {
        guard let broker else { return [] }
        let jobs = try await store.claimJobs(processor: processor, lookahead: configuration.lookahead,
                                             leaseSeconds: configuration.leaseSeconds,
                                             artifactBaseURL: configuration.artifactBaseURL)
        var routed: [(exchange: String, routingKey: String, job: JobMessage)] = jobs.map {
            (BrokerTopology.jobsExchange, $0.processor, $0)
        }
        if addressed {
            routed += try await store.claimAddressedJobs(processor: processor, leaseSeconds: configuration.leaseSeconds,
                                                         artifactBaseURL: configuration.artifactBaseURL).map {
                (BrokerTopology.controlExchange, $0.builder, $0.job)
            }
        }
        guard !routed.isEmpty else { return [] }
        let expiration = String(configuration.acceptTimeoutSeconds * 1000)
        // Shared jobs first, then addressed ones: the order of `routed`, so results line up with it.
        var results: [Result<Void, any Error>] = []
        for exchange in [BrokerTopology.jobsExchange, BrokerTopology.controlExchange] {
            let messages = routed.filter { $0.exchange == exchange }.map { item in
                AMQPClient.OutgoingMessage(
                    routingKey: item.routingKey, body: WireCodec.encode(item.job),
                    properties: MessageProperties(messageID: "build-\(item.job.buildID)-\(item.job.attempt)", type: "job",
                                                  expiration: expiration))
            }
            if !messages.isEmpty { results += await broker.publishAll(exchange: exchange, mandatory: true, messages) }
        }
        var published: [JobMessage] = []
        defer { BuilddMetrics.jobsPublished(published.count, processor: processor) }
        for (item, result) in zip(routed, results) {
            let job = item.job
            var metadata: Logger.Metadata = ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)",
                                             "processor": "\(job.processor)"]
            if item.exchange == BrokerTopology.controlExchange { metadata["builder.name"] = "\(item.routingKey)" }
            switch result {
            case .success:
                published.append(job)
                logger.info("job published", metadata: metadata)
            case .failure(let error):
                logger.warning("job not published, releasing claim", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                do {
                    try await store.releaseClaim(buildID: job.buildID, attempt: job.attempt)
                } catch {
                    logger.warning("claim not released; the scan will", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                }
            }
        }
        return published
    }

    /// Tells one agent to stop a build (build, attempt).
    /// Asks an agent to run its own reset (``ResetMethod/agent``) for the reset `attempt`; it reports the
    /// outcome as a `reset` event. Returns whether the broker confirmed the message.
    public func sendClean(builder: String, attempt: Int) async -> Bool {
        guard let broker else { return false }
        let message = ControlMessage(command: .clean, attempt: Int32(clamping: attempt), reason: "reset")
        do {
            try await broker.publish(exchange: BrokerTopology.controlExchange, routingKey: builder,
                                     body: WireCodec.encode(message), properties: MessageProperties(type: "control"))
            return true
        } catch {
            logger.warning("clean not sent", metadata: ["builder.name": "\(builder)", "error": "\(error)"])
            return false
        }
    }

    public func sendAbort(builder: String, buildID: Int64, attempt: Int32, reason: String) async {
        guard let broker else { return }
        let message = ControlMessage(command: .abort, buildID: buildID, attempt: attempt, reason: reason)
        do {
            try await broker.publish(exchange: BrokerTopology.controlExchange, routingKey: builder,
                                     body: WireCodec.encode(message), properties: MessageProperties(type: "control"))
        } catch {
            logger.warning("abort not sent", metadata: ["builder.name": "\(builder)", "error": "\(error)"])
        }
    }
}
