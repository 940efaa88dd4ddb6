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
    let master: BuilddMaster
    let store: BuilddStore
    let broker: AMQPClient
    let configuration: MasterConfiguration
    let logger: Logger
    public let wake = WakeSignal()
    private let declared = Mutex<(generation: Int, queues: Set<String>)>((0, []))
    private let topology = Mutex<(names: BrokerTopologyNames, at: ContinuousClock.Instant)?>(nil)

    public init(master: BuilddMaster, store: BuilddStore, broker: AMQPClient, configuration: MasterConfiguration,
                logger: Logger) {
        self.master = master
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

    /// One pass: for each processor, claim what fits its window and publish it (the seed's
    /// `dispatchByProcessor`; the claim itself reads the head of the queue, so the seed's
    /// `sortAndSplitByProcessor` would only add a round trip). Returns how many jobs were published.
    @discardableResult
    public func dispatchOnce() async throws -> Int {
        guard let generation = broker.currentGeneration else { return 0 }
        var published = 0
        let names = try await topologyNames()
        for builder in names.controlQueues {
            try await ensureQueue(BrokerTopology.controlQueue(builder: builder), generation: generation) { connection, type in
                try BrokerTopology.declareControlQueue(builder: builder, on: connection, queueType: type)
            }
        }
        for processor in names.processors {
            try await ensureQueue(BrokerTopology.jobQueue(processor: processor), generation: generation) { connection, type in
                try BrokerTopology.declareJobQueue(processor: processor, on: connection, queueType: type)
            }
            published += try await master.dispatch(processor: processor, addressed: names.addressed.contains(processor)).count
        }
        return published
    }

    /// The processors and the builders with control queues, read again at most once a second: one added
    /// while the farm runs is picked up within a second, and a busy dispatcher does not ask at every pass.
    private func topologyNames() async throws -> BrokerTopologyNames {
        let now = ContinuousClock.now
        if let cached = topology.withLock({ $0 }), now - cached.at < .seconds(1) { return cached.names }
        let names = try await store.brokerTopologyNames()
        topology.withLock { $0 = (names, now) }
        return names
    }

    /// Declares a queue (a processor's job queue, an agent's control queue) once per broker connection; new
    /// ones are picked up at runtime. Masters declare and bind every queue: agents' broker users may not.
    private func ensureQueue(_ queue: String, generation: Int,
                             _ declare: @escaping @Sendable (AMQPConnection, String) throws -> Void) async throws {
        let known = declared.withLock { $0.generation == generation && $0.queues.contains(queue) }
        if known { return }
        let queueType = configuration.queueType
        try await broker.perform { connection in try declare(connection, queueType) }
        declared.withLock { state in
            if state.generation != generation { state = (generation, []) }
            state.queues.insert(queue)
        }
        logger.info("queue ready", metadata: ["queue": "\(queue)"])
    }
}
