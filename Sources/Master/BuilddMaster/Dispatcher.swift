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
    private let declared = Mutex<(generation: Int, processors: Set<String>)>((0, []))

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

    /// One pass: the seed's `sortAndSplitByProcessor` then `dispatchByProcessor` for each processor.
    /// Returns how many jobs were published.
    @discardableResult
    public func dispatchOnce() async throws -> Int {
        guard let generation = broker.currentGeneration else { return 0 }
        for processor in try await store.processorNames() {
            try await ensureQueue(processor: processor, generation: generation)
        }
        var published = 0
        for (processor, items) in try await master.sortAndSplitByProcessor() {
            published += try await master.dispatchByProcessor(processor, items).count
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
}
