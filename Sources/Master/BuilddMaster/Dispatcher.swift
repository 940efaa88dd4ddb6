import AMQP
import BuilddShared
import Logging
import Synchronization

/// A coalescing wake-up signal: any number of `signal()` calls while the waiter is busy wake it once.
public final class WakeSignal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    public func signal() { continuation.yield() }

    /// The wake-ups; ends when the waiting task is cancelled.
    public var wakeups: AsyncStream<Void> { stream }
}

/// Claims waiting builds by score and publishes their jobs (DESIGN.md, the dispatch contract):
/// claim in a transaction with SKIP LOCKED within the processor's window, commit, then publish with
/// a confirm. A job that cannot be published is released at once; one whose publish was lost is
/// claimed again by the watchdog after the accept timeout.
public final class Dispatcher: Sendable {
    let store: BuilddStore
    let broker: AMQPClient
    let configuration: MasterConfiguration
    let logger: Logger
    public let wake = WakeSignal()
    private let declared = Mutex<(generation: Int, processors: Set<String>)>((0, []))

    public init(store: BuilddStore, broker: AMQPClient, configuration: MasterConfiguration, logger: Logger) {
        self.store = store
        self.broker = broker
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until cancelled: one pass per wake-up.
    public func run() async {
        for await _ in wake.wakeups {
            do {
                try await dispatchOnce()
            } catch {
                logger.warning("dispatch pass failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// One pass over every processor. Returns how many jobs were published.
    @discardableResult
    public func dispatchOnce() async throws -> Int {
        guard let generation = broker.currentGeneration else { return 0 }
        var published = 0
        for processor in try await store.processorNames() {
            try await ensureQueue(processor: processor, generation: generation)
            let jobs = try await store.claimJobs(processor: processor, lookahead: configuration.lookahead,
                                                 leaseSeconds: configuration.leaseSeconds,
                                                 artifactBaseURL: configuration.artifactBaseURL)
            guard !jobs.isEmpty else { continue }
            published += await publish(jobs)
        }
        return published
    }

    /// Declares a processor's job queue once per broker connection; new processors are picked up at runtime.
    private func ensureQueue(processor: String, generation: Int) async throws {
        let known = declared.withLock { $0.generation == generation && $0.processors.contains(processor) }
        if known { return }
        let queueType = configuration.queueType
        try await broker.perform { connection in
            try BrokerTopology.declareJobQueue(processor: processor, on: connection, queueType: queueType)
        }
        declared.withLock { state in
            if state.generation != generation { state = (generation, []) }
            state.processors.insert(processor)
        }
        logger.info("job queue ready", metadata: ["processor": "\(processor)"])
    }

    /// Publishes jobs in claim (score) order with their confirms in flight together; releases the claim
    /// of each job the broker did not take.
    private func publish(_ jobs: [JobMessage]) async -> Int {
        let expiration = String(configuration.acceptTimeoutSeconds * 1000)
        let messages = jobs.map { job in
            AMQPClient.OutgoingMessage(
                routingKey: job.processor, body: WireCodec.encode(job),
                properties: MessageProperties(messageID: "build-\(job.buildID)-\(job.attempt)", type: "job",
                                              expiration: expiration))
        }
        let results = await broker.publishAll(exchange: BrokerTopology.jobsExchange, mandatory: true, messages)
        var published = 0
        for (job, result) in zip(jobs, results) {
            let metadata: Logger.Metadata = ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)",
                                             "processor": "\(job.processor)"]
            switch result {
            case .success:
                published += 1
                logger.info("job published", metadata: metadata)
            case .failure(let error):
                logger.warning("job not published, releasing claim", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                do {
                    try await store.releaseClaim(buildID: job.buildID, attempt: job.attempt)
                } catch {
                    logger.warning("claim not released; the watchdog will",
                                   metadata: metadata.merging(["error": "\(error)"]) { $1 })
                }
            }
        }
        return published
    }
}
