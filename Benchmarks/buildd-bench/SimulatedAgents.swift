import AMQP
import BuilddShared
import Logging
import Synchronization

/// Many agents in one process. Each is a builder of the database speaking the agent's wire protocol
/// (hello, heartbeat, accepted, finished with its own session and sequence numbers) over one shared
/// broker connection that consumes the processor's job queue. A job goes to an idle agent, which
/// announces `accepted`, acks the job and, the build being a no-op, reports `finished` OK at once.
final class SimulatedAgents: Sendable {
    struct Hooks: Sendable {
        /// A job reached the farm (before `accepted` is sent), with the monotonic time it arrived.
        var jobReceived: @Sendable (JobMessage, Double) -> Void = { _, _ in }
        /// An agent sent `finished` (the monotonic time just before publishing it).
        var finishedSent: @Sendable (Int, Double) -> Void = { _, _ in }
    }

    private struct State {
        var idle: [Int]
        var seq: [Int64]
        var waiting: [(JobMessage, Delivery)] = []
        var started = 0
        var finished = 0
    }

    let names: [String]
    let processor: String
    let session: String
    let client: AMQPClient
    let hooks: Hooks
    private let state: Mutex<State>

    init(brokerURL: String, processor: String, names: [String], prefetch: UInt16, hooks: Hooks = Hooks()) throws {
        self.names = names
        self.processor = processor
        self.hooks = hooks
        session = "bench-\(UInt64.random(in: 0...UInt64.max))"
        state = Mutex(State(idle: Array((0..<names.count).reversed()), seq: Array(repeating: 0, count: names.count)))
        var logger = Logger(label: "buildd-bench")
        logger.logLevel = .warning
        let queue = BrokerTopology.jobQueue(processor: processor)
        client = AMQPClient(configuration: try AMQPConfiguration(url: brokerURL, connectionName: "buildd-bench-agents"),
                            logger: logger) { connection in
            try connection.qos(prefetch: prefetch, channel: AMQPClient.consumeChannel)
            try connection.consume(queue: queue, channel: AMQPClient.consumeChannel)
        }
    }

    var counts: (started: Int, finished: Int) { state.withLock { ($0.started, $0.finished) } }

    /// Connects, says hello for every agent and takes jobs until the task is cancelled.
    func run(heartbeatEvery: Duration = .seconds(5)) async throws {
        client.start()
        try await client.waitUntilConnected()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.greet(.hello) }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: heartbeatEvery)
                    try await self.greet(.heartbeat)
                }
            }
            group.addTask {
                for await delivery in self.client.deliveries {
                    self.take(delivery, at: now())
                }
            }
            try await group.next()
            try await group.next()
        }
    }

    func shutdown() async { await client.shutdown() }

    /// Sends `kind` (hello or heartbeat, state IDLE) for each idle agent, many confirms in flight.
    func greet(_ kind: AgentEventKind) async throws {
        let idle = state.withLock { $0.idle }
        for chunk in stride(from: 0, to: idle.count, by: 500) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for agent in idle[chunk..<min(chunk + 500, idle.count)] {
                    group.addTask { try await self.send(kind, agent: agent, state: .idle) }
                }
                try await group.waitForAll()
            }
        }
    }

    private func take(_ delivery: Delivery, at time: Double) {
        guard let job = try? WireCodec.decodeJob(delivery.body) else {
            Task { try? await client.reject(delivery, requeue: false) }
            return
        }
        hooks.jobReceived(job, time)
        let agent: Int? = state.withLock { state in
            if let agent = state.idle.popLast() { return agent }
            state.waiting.append((job, delivery))  // the look-ahead: wait for an agent to free up
            return nil
        }
        if let agent { Task { await build(job, delivery, agent: agent) } }
    }

    /// accepted, ack, finished (a no-op build), then the next waiting job or idle.
    private func build(_ job: JobMessage, _ delivery: Delivery, agent: Int) async {
        var job = job
        var delivery = delivery
        while true {
            do {
                try await send(.accepted, agent: agent, state: .building, job: job)
                try await client.ack(delivery)
                state.withLock { $0.started += 1 }
                hooks.finishedSent(agent, now())
                try await send(.finished, agent: agent, state: .idle, job: job, result: .ok)
                state.withLock { $0.finished += 1 }
            } catch {
                progress("simulated agent \(names[agent]): \(error)")
            }
            let next: (JobMessage, Delivery)? = state.withLock { state in
                if state.waiting.isEmpty {
                    state.idle.append(agent)
                    return nil
                }
                return state.waiting.removeFirst()
            }
            guard let next else { return }
            (job, delivery) = next
        }
    }

    private func send(_ kind: AgentEventKind, agent: Int, state agentState: AgentState, job: JobMessage? = nil,
                      result: BuilderResult? = nil) async throws {
        let name = names[agent]
        let session = "\(self.session)-\(agent)"
        let processors = [processor]
        try await client.publish(exchange: BrokerTopology.statusExchange, mandatory: true) { [self] in
            let seq = state.withLock { state -> Int64 in
                state.seq[agent] += 1
                return state.seq[agent]
            }
            let event = AgentEvent(kind: kind, builder: name, session: session, seq: seq, state: agentState,
                                   buildID: job?.buildID, attempt: job?.attempt, result: result,
                                   files: kind == .finished ? [] : nil,
                                   processors: kind == .hello ? processors : nil,
                                   uploadKeySHA256: kind == .accepted ? SHA256.hex(of: randomHexToken(bytes: 32)) : nil)
            return (BrokerTopology.statusRoutingKey(builder: name, event: kind.rawValue), WireCodec.encode(event),
                    MessageProperties(type: kind.rawValue, headers: [BrokerTopology.builderHeader: .string(name)]))
        }
    }
}
