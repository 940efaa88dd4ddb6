import AMQP
import BuilddShared
import Logging
import Postgres

/// Applies agent events from the status shards, in order, one transaction each.
///
/// A message that cannot be read, or may not be applied, is rejected without requeue and so
/// dead-lettered to `buildd.dead`. A message that fails for a transient reason (database down) is
/// retried in place, keeping the builder's order, and acked only after its transaction committed.
public final class EventConsumer: Sendable {
    let master: BuilddMaster
    let store: BuilddStore
    let broker: AMQPClient
    let configuration: MasterConfiguration
    let logger: Logger
    let onApplied: @Sendable () -> Void

    public init(master: BuilddMaster, store: BuilddStore, broker: AMQPClient, configuration: MasterConfiguration,
                logger: Logger, onApplied: @escaping @Sendable () -> Void) {
        self.master = master
        self.store = store
        self.broker = broker
        self.configuration = configuration
        self.logger = logger
        self.onApplied = onApplied
    }

    public func run() async {
        for await delivery in broker.deliveries {
            await handle(delivery)
        }
    }

    func handle(_ delivery: Delivery) async {
        let event: AgentEvent
        do {
            event = try WireCodec.decodeEvent(delivery.body)
        } catch let error as WireError {
            await deadLetter(delivery, reason: "\(error)", kind: error.code.metricLabel)
            return
        } catch {
            await deadLetter(delivery, reason: "\(error)", kind: "malformed")
            return
        }
        let expectedPrefix = event.builder + "."
        guard delivery.routingKey.hasPrefix(expectedPrefix) else {
            await deadLetter(delivery, reason: "routing key \(delivery.routingKey) does not match builder \(event.builder)",
                             kind: "routing_key")
            return
        }
        var metadata: Logger.Metadata = ["builder.name": "\(event.builder)", "event.kind": "\(event.kind.rawValue)",
                                         "event.seq": "\(event.seq)"]
        if let id = event.buildID { metadata["build.id"] = "\(id)" }
        if let attempt = event.attempt { metadata["build.attempt"] = "\(attempt)" }
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                let outcome = try await store.apply(event, userID: delivery.properties.userID,
                                                    leaseSeconds: configuration.leaseSeconds)
                switch outcome {
                case .applied(let what):
                    if event.kind != .heartbeat { logger.info("event applied: \(what)", metadata: metadata) }
                case .ignored(let why):
                    logger.info("event ignored: \(why)", metadata: metadata)
                case .abort(let buildID, let attempt, let reason):
                    logger.warning("telling agent to abort: \(reason)", metadata: metadata)
                    await master.sendAbort(builder: event.builder, buildID: buildID, attempt: attempt, reason: reason)
                case .rejected(let reason):
                    await deadLetter(delivery, reason: reason, kind: "not_allowed")
                    return
                }
                try await broker.ack(delivery)
                if case .applied = outcome { onApplied() }
                return
            } catch {
                // Transient (database or broker trouble): keep the message, wait, try again.
                logger.warning("event not applied, will retry", metadata: metadata.merging(["error": "\(error)"]) { $1 })
                if broker.currentGeneration != delivery.generation { return }  // redelivered on the new connection
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    private func deadLetter(_ delivery: Delivery, reason: String, kind: String) async {
        BuilddMetrics.rejected(kind)
        logger.warning("event dead-lettered", metadata: ["reason": "\(reason)", "routing.key": "\(delivery.routingKey)",
                                                          "amqp.user": "\(delivery.properties.userID ?? "")"])
        try? await broker.reject(delivery, requeue: false)
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

    /// One pass of the seed's `scanActiveBuilders`.
    public func checkOnce() async throws {
        if try await master.scanActiveBuilders().changed { onChange() }
    }
}
