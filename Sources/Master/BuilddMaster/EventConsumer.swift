import AMQP
import BuilddShared
import Logging
import Postgres
import Synchronization

/// Applies agent events from the status shards.
///
/// Events go to one of `eventLanes` lanes by builder, so one builder's events are applied in the order
/// its shard delivered them while other builders' events are applied at the same time. A lane applies
/// what has queued up in it (up to `eventBatch` events) in one transaction, and acks each message only
/// after that transaction committed: under load one durable commit serves many events.
///
/// A message that cannot be read, or may not be applied, is rejected without requeue and so
/// dead-lettered to `buildd.dead`. A batch that fails (database down) is retried one event at a time,
/// in order, each until it applies: a transient error keeps the builder's order, and an event that
/// cannot be applied does not take the others with it.
public final class EventConsumer: Sendable {
    let master: BuilddMaster
    let store: BuilddStore
    let broker: AMQPClient
    /// Refused messages per builder (``NoiseRule``): bounded log lines, and a flood marks the builder not ok.
    let refusals = RefusalLog()
    let configuration: MasterConfiguration
    let intake: StatusShardIntake
    let logger: Logger
    let onApplied: @Sendable () -> Void

    public init(master: BuilddMaster, store: BuilddStore, broker: AMQPClient, configuration: MasterConfiguration,
                intake: StatusShardIntake, logger: Logger, onApplied: @escaping @Sendable () -> Void) {
        self.master = master
        self.store = store
        self.broker = broker
        self.configuration = configuration
        self.intake = intake
        self.logger = logger
        self.onApplied = onApplied
    }

    public func run() async {
        let lanes = (0..<max(1, configuration.eventLanes)).map { _ in EventLane() }
        await withTaskGroup(of: Void.self) { group in
            for lane in lanes {
                group.addTask { await self.drain(lane) }
            }
            for await delivery in broker.deliveries {
                lanes[Self.lane(of: delivery, among: lanes.count)].push(delivery)
            }
            for lane in lanes { lane.finish() }
        }
    }

    /// The lane of a delivery: by the builder it names (the `builder` header the shards hash on, else the
    /// routing key's first part), with FNV-1a rather than Swift's per-process seeded hash.
    static func lane(of delivery: Delivery, among count: Int) -> Int {
        let name: String
        if case .string(let header)? = delivery.properties.headers[BrokerTopology.builderHeader] {
            name = header
        } else {
            name = String(delivery.routingKey.split(separator: ".", maxSplits: 1).first ?? "")
        }
        var hash: UInt32 = 2_166_136_261  // FNV-1a
        for byte in name.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return Int(hash % UInt32(count))
    }

    private func drain(_ lane: EventLane) async {
        while let batch = await lane.next(max: max(1, configuration.eventBatch)) {
            await handle(batch)
        }
    }

    /// An event that was read and may be applied, with its message.
    struct Readable {
        let delivery: Delivery
        let report: BuilderReport
        var metadata: Logger.Metadata {
            var metadata: Logger.Metadata = ["builder.name": "\(report.builder)", "event.kind": "\(report.event.name)",
                                             "event.seq": "\(report.seq)"]
            if let ref = report.event.attempt {
                metadata["build.id"] = "\(ref.build)"
                metadata["build.attempt"] = "\(ref.attempt)"
            }
            return metadata
        }
    }

    func handle(_ deliveries: [Delivery]) async {
        var readable: [Readable] = []
        // Deliveries of a connection that is gone were requeued by the broker: another consumer (or this
        // one, on its new connection) gets them again.
        let generation = broker.currentGeneration
        for delivery in deliveries where delivery.generation == generation {
            if let report = await read(delivery) { readable.append(Readable(delivery: delivery, report: report)) }
        }
        guard !readable.isEmpty else { return }
        let started = ContinuousClock.now
        if readable.count > 1 {
            do {
                let outcomes = try await watched {
                    try await store.apply(reports: readable.map(\.report), leaseSeconds: configuration.leaseSeconds)
                }
                var applied = false
                var acks: [Delivery] = []
                for (item, outcome) in zip(readable, outcomes) {
                    let settled = await settle(item, outcome)
                    applied = settled.applied || applied
                    if settled.ack { acks.append(item.delivery) }
                }
                // Committed: one hop to the broker's thread (and, when nothing older is outstanding, one frame)
                // acks the batch. If the acks are lost with the connection, the redeliveries are replays.
                try? await broker.ackAll(acks)
                if applied { onApplied() }
                return
            } catch {
                logger.warning("event batch not applied, applying one by one",
                               metadata: ["events": "\(readable.count)", "error": "\(error)"])
            }
        }
        // (A batch that failed counts towards stepping down from its start.)
        for (index, item) in readable.enumerated() {
            if await applyAlone(item, failingSince: readable.count > 1 && index == 0 ? started : nil) == false { return }
        }
    }

    /// Decodes a message into a typed report; one that cannot be read or names another builder than its
    /// routing key is dead-lettered (nil).
    private func read(_ delivery: Delivery) async -> BuilderReport? {
        let event: AgentEvent
        let report: BuilderReport
        do {
            event = try WireCodec.decodeEvent(delivery.body)
            report = try event.report(user: delivery.properties.userID)
        } catch let error as WireError {
            await deadLetter(delivery, reason: "\(error)", kind: error.code.metricLabel)
            return nil
        } catch {
            await deadLetter(delivery, reason: "\(error)", kind: "malformed")
            return nil
        }
        guard delivery.routingKey.hasPrefix(event.builder + ".") else {
            await deadLetter(delivery, reason: "routing key \(delivery.routingKey) does not match builder \(event.builder)",
                             kind: "routing_key")
            return nil
        }
        return report
    }

    /// Applies one event in a transaction of its own, retrying transient failures in place. An event that
    /// fails otherwise fails the same way every time (a poison event: a constraint it violates, a bug): it
    /// is dead-lettered with the reason, so the rest of its lane goes on. Returns false when the connection
    /// its message came on is gone (the rest of the batch is redelivered too).
    private func applyAlone(_ item: Readable, failingSince batchStart: ContinuousClock.Instant?) async -> Bool {
        var backoff = Duration.milliseconds(100)
        var failingSince = batchStart
        while !Task.isCancelled {
            // A message of a connection that is gone (this master stepped down while an earlier event waited)
            // was requeued to another master: applying it here too would only wait on the database again.
            if broker.currentGeneration != item.delivery.generation { return false }
            let attempted = ContinuousClock.now
            do {
                let outcome = try await watched {
                    try await store.apply(reports: [item.report], leaseSeconds: configuration.leaseSeconds)[0]
                }
                let settled = await settle(item, outcome)
                if settled.ack { try? await broker.ack(item.delivery) }
                if settled.applied { onApplied() }
                return true
            } catch where !Self.mayPassOnRetry(error) {
                await deadLetter(item.delivery, reason: "cannot be applied: \(error)", kind: "apply_failed")
                return true
            } catch {
                // Transient (database or broker trouble): keep the message, wait, try again.
                logger.warning("event not applied, will retry", metadata: item.metadata.merging(["error": "\(error)"]) { $1 })
                let since = failingSince ?? attempted
                failingSince = since
                if ContinuousClock.now - since >= intake.patience,
                   !(error is CancellationError), !(error is WorkerStoppedError) {
                    stepDown(because: "\(error)", refusedByTheDatabase: Self.refusedByTheDatabase(error))
                }
                if broker.currentGeneration != item.delivery.generation { return false }  // redelivered on the new connection
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
        return false
    }

    /// Hands the status shards to the other masters (once; again only after it resumed).
    private func stepDown(because failure: String, refusedByTheDatabase: Bool) {
        guard intake.stepDown(refusedByTheDatabase: refusedByTheDatabase) else { return }
        intake.note(failure: failure)
        let holdDown = intake.holdDown
        BuilddMetrics.steppedDown(holdDown: holdDown.wait)
        logger.error("cannot apply events: handing the status shards to the other masters until the database takes writes again",
                     metadata: ["error": "\(failure)", "step_downs_in_a_row": "\(holdDown.stepDownsInARow)",
                                "hold_down_seconds": "\(holdDown.wait.components.seconds)"])
        broker.reconnect(reason: "stepping down from the status shards (the database does not take writes)")
    }

    /// Runs one apply, stepping down when the database has not answered it within the patience: a link cut
    /// a moment ago fails a statement only after its TCP timeout, and a reconnect tries each host of the
    /// URL in turn (seconds each), so waiting for the failure can take longer than the lease allows. The
    /// apply itself goes on; what it commits is a replay to the master that takes its message over.
    private func watched<T>(_ apply: () async throws -> T) async throws -> T {
        let patience = intake.patience
        let watchdog = Task { [weak self] in
            try await Task.sleep(for: patience)
            self?.stepDown(because: "the database has not answered an apply for \(patience)", refusedByTheDatabase: false)
        }
        defer { watchdog.cancel() }
        return try await apply()
    }

    /// While this master has stepped down from the status shards, asks the database every second whether it
    /// answers; when it does, makes the broker connection again, consuming (a standby behind the masters that
    /// took the shards over, until one of them goes).
    func resumeWhenTheDatabaseAnswers() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            guard !intake.isOn, intake.holdDownIsOver() else { continue }
            // Answering is not enough: a database that refuses writes cannot take events either.
            guard (try? await store.acceptsWrites()) == true else { continue }
            if intake.resume() {
                BuilddMetrics.consumingStatusShards()
                logger.info("the database answers again: consuming the status shards (as a standby)")
                broker.reconnect(reason: "consuming the status shards again")
            }
        }
    }

    /// Acts on an outcome after its transaction committed: log, send an abort or dead-letter. Returns
    /// whether the event changed state and whether its message is to be acked (the caller acks).
    private func settle(_ item: Readable, _ outcome: EventOutcome) async -> (applied: Bool, ack: Bool) {
        let metadata = item.metadata
        switch outcome {
        case .applied(let what):
            if case .heartbeat = item.report.event {} else { logger.debug("event applied: \(what)", metadata: metadata) }
            return (true, true)
        case .ignored(let why):
            logger.info("event ignored: \(why)", metadata: metadata)
            return (false, true)
        case .abort(let buildID, let attempt, let reason):
            logger.warning("telling agent to abort: \(reason)", metadata: metadata)
            await master.sendAbort(builder: item.report.builder, buildID: buildID, attempt: attempt, reason: reason)
            return (false, true)
        case .rejected(let reason):
            await deadLetter(item.delivery, reason: reason, kind: "not_allowed")
            return (false, false)
        }
    }

    /// Whether the database itself answered with this failure, its link and its server up: out of disk,
    /// memory or connections (53), an I/O error (58), a lock not given in time. Not a link that failed (08,
    /// or no answer at all) nor a server stopping or restarting (57): those end with the outage.
    public static func refusedByTheDatabase(_ error: any Error) -> Bool {
        guard let error = error as? PostgresError, error.kind == .server, let state = error.sqlState else { return false }
        return !["08", "57"].contains(String(state.prefix(2)))
    }

    /// Whether applying an event may succeed when tried again: the database failed for a while
    /// (``PostgresError/isTransient``) or this master is stopping. Any other failure (a constraint the event
    /// violates, a decoding error, a bug) is for good.
    static func mayPassOnRetry(_ error: any Error) -> Bool {
        switch error {
        case is CancellationError, is WorkerStoppedError: return true
        case let error as PostgresError: return error.isTransient
        default: return false
        }
    }

    private func deadLetter(_ delivery: Delivery, reason: String, kind: String) async {
        BuilddMetrics.rejected(kind)
        // The routing key's first word is the sender's builder name: the broker's topic permission lets an
        // agent publish only under its own.
        let builder = delivery.routingKey.split(separator: ".").first.map(String.init) ?? ""
        let verdict = refusals.note(builder, now: ContinuousClock.now.secondsSinceStart)
        if verdict.log {
            logger.warning("event dead-lettered", metadata: [
                "reason": "\(reason)", "routing.key": "\(delivery.routingKey)", "amqp.user": "\(delivery.properties.userID ?? "")",
                "refusals": "\(verdict.standsFor)"])
        }
        if verdict.flood, Naming.isValidName(builder) {
            let why = "sent \(NoiseRule.floodPerMinute) refused messages within a minute (last: \(kind))"
            logger.warning("builder marked not ok", metadata: ["builder.name": "\(builder)", "reason": "\(why)"])
            try? await store.markBuilderFailed(builder, reason: why)
        }
        try? await broker.reject(delivery, requeue: false)
    }
}

/// The deliveries waiting in one lane of the ``EventConsumer``.
final class EventLane: Sendable {
    private let queue = Mutex<(items: [Delivery], finished: Bool)>(([], false))
    private let signal = WakeSignal()

    func push(_ delivery: Delivery) {
        queue.withLock { $0.items.append(delivery) }
        signal.signal()
    }

    func finish() {
        queue.withLock { $0.finished = true }
        signal.signal()
    }

    /// Everything queued (at most `max`), waiting for at least one; nil once finished and empty.
    func next(max: Int) async -> [Delivery]? {
        var wakeups = signal.wakeups.makeAsyncIterator()
        while true {
            let (batch, done): ([Delivery], Bool) = queue.withLock { state in
                let count = min(max, state.items.count)
                let batch = Array(state.items.prefix(count))
                state.items.removeFirst(count)
                return (batch, state.finished && state.items.isEmpty)
            }
            if !batch.isEmpty { return batch }
            if done { return nil }
            guard await wakeups.next() != nil else { return nil }
        }
    }
}

/// Runs the scan of active builds every tick and keeps the age bonus current.
public final class Watchdog: Sendable {
    let master: BuilddMaster
    let store: BuilddStore
    let configuration: MasterConfiguration
    let logger: Logger
    let onChange: @Sendable () -> Void

    public init(master: BuilddMaster, store: BuilddStore, configuration: MasterConfiguration, logger: Logger,
                onChange: @escaping @Sendable () -> Void) {
        self.master = master
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.onChange = onChange
    }

    /// How often the age bonus of waiting builds is brought up to date.
    public static let ageRefreshInterval: Duration = .seconds(60)

    public func run() async {
        let clock = ContinuousClock()
        var nextAgeRefresh = clock.now
        while !Task.isCancelled {
            do {
                try await checkOnce()
                if clock.now >= nextAgeRefresh {
                    nextAgeRefresh = clock.now + Self.ageRefreshInterval
                    let changed = try await store.refreshAgeScores()
                    if changed > 0 { logger.info("age bonus updated", metadata: ["builds": "\(changed)"]) }
                }
            } catch {
                logger.warning("watchdog pass failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: configuration.tick)
        }
    }

    /// One pass of the seed's `scanActiveBuilders`, then the pass over builders awaiting their reset: the
    /// resets it starts run in tasks of their own, and a builder that ends CLEAN wakes the dispatcher.
    public func checkOnce() async throws {
        if try await master.scanActiveBuilders().changed { onChange() }
        let master = self.master
        let runner = ResetRunner(store: store, logger: logger) { await master.sendClean(builder: $0, attempt: $1) }
        for order in try await store.resetPass() {
            let onChange = self.onChange
            Task {
                if case .applied = await runner.run(order) { onChange() }
            }
        }
    }
}
