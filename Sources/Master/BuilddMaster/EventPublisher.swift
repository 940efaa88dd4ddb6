import AMQP
import BuilddShared
import Foundation
import Logging

/// Publishes every build state change on the broker once it is committed: `buildd.events` (topic, routing key
/// `PROCESSOR.STATUS`, the JSON of ``BuilddStore/BuildEventMessage``), private archives' builds on
/// `buildd.events.private`. One master publishes at a time (a lease in the database, a third of the build
/// lease); the others wait to take over. Lines are read from the builds' history in commit order and the
/// cursor moves only past what the broker confirmed, so a publisher killed mid-batch leaves nothing
/// unpublished: the next one publishes it again (at least once, in order per build; `seq` tells a duplicate).
public final class EventPublisher: Sendable {
    let store: BuilddStore
    let broker: AMQPClient
    let holder: String
    let leaseSeconds: Double
    let logger: Logger
    /// Lines read and published per round.
    static let batch = 2000

    public init(store: BuilddStore, broker: AMQPClient, name: String, buildLeaseSeconds: Int, logger: Logger) {
        self.store = store
        self.broker = broker
        // Unique per process: a restarted master with the same name waits for the lease like any other.
        holder = "\(name)/\(getpid())/\(randomHexToken(bytes: 3))"
        leaseSeconds = min(10, max(2, Double(buildLeaseSeconds) / 3))
        self.logger = logger
    }

    public func run() async {
        var holding = false
        var failures = 0
        while !Task.isCancelled {
            do {
                guard let cursor = try await store.holdEventPublisher(holder: holder, leaseSeconds: leaseSeconds) else {
                    if holding { logger.notice("build events: another master publishes now") }
                    holding = false
                    try await Task.sleep(for: .seconds(leaseSeconds / 2))
                    continue
                }
                if !holding { logger.info("build events: this master publishes", metadata: ["events.cursor": "\(cursor.xid)/\(cursor.id)"]) }
                holding = true
                if failures > 0 {
                    logger.info("build events: publishing again", metadata: ["failures": "\(failures)"])
                    failures = 0
                }
                guard try await publishOnce(after: cursor) else {
                    try await Task.sleep(for: .milliseconds(100))
                    continue
                }
            } catch is CancellationError {
                break
            } catch {
                // Once a second while the database or the broker is away: the first failure and every 30th are logged.
                if failures % 30 == 0 {
                    logger.warning("build events: publishing failed; trying again every second",
                                   metadata: ["error": "\(error)", "failures": "\(failures + 1)"])
                }
                failures += 1
                try? await Task.sleep(for: .seconds(1))
            }
        }
        if holding { try? await store.releaseEventPublisher(holder: holder) }
    }

    /// Publishes the next batch; false when there was nothing to publish.
    func publishOnce(after cursor: BuilddStore.EventCursor) async throws -> Bool {
        let (messages, next) = try await store.eventsToPublish(after: cursor, limit: Self.batch)
        guard let next else { return false }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var outgoing: [String: [AMQPClient.OutgoingMessage]] = [:]
        for message in messages {
            let exchange = message.archive == ArchivePurpose.private.rawValue
                ? BrokerTopology.privateEventsExchange : BrokerTopology.eventsExchange
            outgoing[exchange, default: []].append(AMQPClient.OutgoingMessage(
                routingKey: message.routingKey, body: Array(try encoder.encode(message)),
                properties: MessageProperties(messageID: "event-\(message.event)", type: "build.\(message.status)")))
        }
        for (exchange, batch) in outgoing.sorted(by: { $0.key < $1.key }) {
            // A build's events all go to one exchange, in order: publishAll keeps the order it is given.
            for result in await broker.publishAll(exchange: exchange, batch) {
                if case .failure(let error) = result { throw error }
            }
        }
        guard try await store.advanceEventCursor(holder: holder, to: next) else {
            logger.notice("build events: lost the lease while publishing; the next holder publishes the batch again")
            return true
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let age = messages.last.flatMap { formatter.date(from: $0.time) }.map { Date().timeIntervalSince($0) } ?? 0
        BuilddMetrics.eventsPublished(messages.count, ageSeconds: age)
        return true
    }
}
