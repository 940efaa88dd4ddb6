import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Synchronization
import Testing

/// Build events out: every state change published on `buildd.events` after its commit, from the builds'
/// history as the outbox, at least once and in order per build, also when the publishing master is
/// SIGKILLed; private archives' events only on `buildd.events.private`. Real PostgreSQL, RabbitMQ, masters
/// and agents.
@Suite(.serialized, .timeLimit(.minutes(8))) struct EventsOutTests {
    /// What a subscriber received: per exchange, each message in arrival order.
    final class Received: Sendable {
        let messages = Mutex<[(exchange: String, routingKey: String, event: BuilddStore.BuildEventMessage)]>([])
        var count: Int { messages.withLock { $0.count } }
    }

    /// A subscriber with a queue bound to each events exchange (`#`), acking what it takes.
    static func subscribe(_ farm: FarmHarness, into received: Received) async throws -> (AMQPClient, Task<Void, Never>) {
        let client = AMQPClient(configuration: try AMQPConfiguration(url: farm.vhost.brokerURL, connectionName: "events-test"),
                                logger: .init(label: "events-test")) { connection in
            for (queue, exchange) in [("test.events", BrokerTopology.eventsExchange),
                                      ("test.events.private", BrokerTopology.privateEventsExchange)] {
                try connection.declareExchange(exchange, type: "topic")
                try connection.declareQueue(queue)
                try connection.bindQueue(queue, exchange: exchange, routingKey: "#")
            }
            try connection.qos(prefetch: 200, channel: AMQPClient.consumeChannel)
            try connection.consume(queue: "test.events", channel: AMQPClient.consumeChannel)
            try connection.consume(queue: "test.events.private", channel: AMQPClient.consumeChannel)
        }
        client.start()
        try await client.waitUntilConnected()
        let task = Task {
            for await delivery in client.deliveries {
                if let event = try? JSONDecoder().decode(BuilddStore.BuildEventMessage.self, from: Data(delivery.body)) {
                    received.messages.withLock { $0.append((delivery.exchange, delivery.routingKey, event)) }
                }
                try? await client.ack(delivery)
            }
        }
        return (client, task)
    }

    @Test func everyChangeOfTwoHundredBuildsIsPublishedInOrderWhileThePublishingMasterIsKilled() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64", "arm64"])
            let agents = [("e-a1", "amd64"), ("e-a2", "amd64"), ("e-b1", "arm64"), ("e-b2", "arm64")]
            for (name, processor) in agents { try await store.addBuilder(name: name, processors: [processor]) }
            try await farm.startMaster(name: "first", lease: 9, acceptTimeout: 5)
            try await farm.startMaster(name: "second", lease: 9, acceptTimeout: 5)
            let received = Received()
            let (subscriber, listening) = try await Self.subscribe(farm, into: received)
            defer { listening.cancel() }

            var builds: [Int64] = []
            var privateBuilds = Set<Int64>()
            for index in 0..<200 {
                let processor = index % 2 == 0 ? "amd64" : "arm64"
                let archive: ArchivePurpose = index % 20 == 3 ? .private : .primary
                let id = try await store.submit(BuildRequest(
                    distribution: "ubuntu", series: "noble", archTag: processor,
                    sourceName: index % 25 == 7 ? "pkg\(index)-broken" : "pkg\(index)", sourceVersion: "1.0", archive: archive))
                builds.append(id)
                if archive == .private { privateBuilds.insert(id) }
            }
            for (name, processor) in agents { try farm.startAgent(name, processors: [processor], sampleSeconds: 0.05) }

            // Once builds are ending, SIGKILL the master that publishes (the lease's holder, read from the
            // database); the other takes the lease over and publishes what the dead one had not.
            #expect(try await eventually(timeout: .seconds(120)) {
                (try await store.buildCounts(includingFinished: true)["FULLYBUILT"] ?? 0) >= 50
            })
            let holder = try #require(try await store.database.query("SELECT holder FROM event_publisher").first?["holder"])
            let victim = try #require(farm.masters.first { holder.hasPrefix("\($0.name)/") }, "holder \(holder)")
            let before = received.count
            kill(victim.process.processIdentifier, SIGKILL)
            print("killed the publishing master \(victim.name) after \(before) events received")
            #expect(try await farm.waitForQuiet(timeout: .seconds(300)))

            // Every line of every build's history, as the database holds it.
            let rows = try await store.database.query("""
                SELECT e.build_id, e.status, (SELECT count(*) FROM build_event p WHERE p.build_id = e.build_id AND p.id <= e.id) AS seq
                  FROM build_event e WHERE e.build_id = ANY($1::bigint[])
                """, [PostgresArray(builds)]).rows
            var expected: [Int64: [Int: String]] = [:]
            for row in rows { expected[try row.int64("build_id"), default: [:]][try row.int("seq")] = try row.string("status") }
            let total = expected.values.reduce(0) { $0 + $1.count }
            #expect(total >= 200 * 4, "\(total) history lines for 200 builds")
            let complete = try await eventually(timeout: .seconds(60)) {
                let seen = Set(received.messages.withLock { $0.map { "\($0.event.build)/\($0.event.seq)" } })
                return seen.count >= total
            }
            let messages = received.messages.withLock { $0 }
            #expect(complete, "received \(messages.count) messages for \(total) history lines")

            var firstSeen: [Int64: [Int]] = [:]
            var duplicates = 0
            for (exchange, routingKey, event) in messages {
                guard let statuses = expected[event.build] else { continue }
                #expect(statuses[event.seq] == event.status, "build \(event.build) seq \(event.seq): \(event.status)")
                #expect(routingKey == "\(event.processor).\(event.status)")
                let isPrivate = privateBuilds.contains(event.build)
                #expect(exchange == (isPrivate ? BrokerTopology.privateEventsExchange : BrokerTopology.eventsExchange),
                        "build \(event.build) (private: \(isPrivate)) came on \(exchange)")
                if firstSeen[event.build]?.contains(event.seq) == true { duplicates += 1 } else { firstSeen[event.build, default: []].append(event.seq) }
            }
            for (build, statuses) in expected {
                let seen = firstSeen[build] ?? []
                #expect(Set(seen) == Set(statuses.keys), "build \(build): missing \(Set(statuses.keys).subtracting(seen).sorted())")
                #expect(seen == seen.sorted(), "build \(build): events out of order \(seen)")
            }
            print("\(messages.count) messages for \(total) history lines: \(duplicates) duplicates (recognised by seq) after the kill")
            let survivor = try #require(farm.masters.first { $0.name != victim.name })
            #expect(farm.log(survivor.name).contains("build events: this master publishes"))
            await subscriber.shutdown()
        }
    }

    /// What a subscriber made by `deploy/rabbitmq/add-event-subscriber` may do on the broker: declare and bind
    /// queues of its own to `buildd.events`, and to `buildd.events.private` only with `--private`; nothing else.
    @Test func aSubscriberFollowsTheEventsItMayAndNothingElse() async throws {
        let farm = try await FarmHarness.make()
        let users = ["ev-public", "ev-private"]
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.startMaster()
            #expect(try await eventually { try await farm.vhost.queueExists(BrokerTopology.jobQueue(processor: "amd64")) })
            defer { Task { await OperationsTests.deleteUsers(users) } }
            for (name, options) in [("ev-public", [String]()), ("ev-private", ["--private"])] {
                let made = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/add-event-subscriber"), [name] + options,
                                                     environment: ["BUILDD_MANAGEMENT_URL": try TestEnvironment.managementURL,
                                                                   "BUILDD_VHOST": farm.vhost.name, "BUILDD_SUBSCRIBER_PASSWORD": "pw-\(name)"])
                #expect(made.status == 0, "\(made)")
            }
            func attempt(_ user: String, _ operation: @escaping @Sendable (AMQPConnection) throws -> Void) async throws -> AMQPError? {
                let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "\(user):pw-\(user)@")
                let configuration = try AMQPConfiguration(url: url, connectionName: "\(user)-tries")
                return try await runBlocking {
                    let connection = try AMQPConnection(configuration: configuration)
                    defer { connection.close() }
                    try connection.openChannel(1)
                    do {
                        _ = try connection.declareQueue("\(user).events")
                        try operation(connection)
                        // A refusal may come after the call returned: ask the channel once more.
                        _ = try connection.declareQueue("\(user).events", passive: true)
                        return nil
                    } catch let error as AMQPError {
                        return error
                    }
                }
            }
            let allowed: [(String, String, @Sendable (AMQPConnection) throws -> Void)] = [
                ("ev-public", "bind its queue to the events", { try $0.bindQueue("ev-public.events", exchange: BrokerTopology.eventsExchange, routingKey: "#") }),
                ("ev-public", "consume its queue", { try $0.consume(queue: "ev-public.events", channel: 1) }),
                ("ev-private", "bind its queue to the private events", {
                    try $0.bindQueue("ev-private.events", exchange: BrokerTopology.privateEventsExchange, routingKey: "#") }),
            ]
            for (user, what, operation) in allowed {
                let refusal = try await attempt(user, operation)
                #expect(refusal == nil, "\(user) may \(what): \(refusal.map { "\($0)" } ?? "")")
            }
            let refused: [(String, @Sendable (AMQPConnection) throws -> Void)] = [
                ("bind its queue to the private events", {
                    try $0.bindQueue("ev-public.events", exchange: BrokerTopology.privateEventsExchange, routingKey: "#") }),
                ("declare a queue not its own", { _ = try $0.declareQueue("buildd.sneaky") }),
                ("consume another subscriber's queue", { try $0.consume(queue: "ev-private.events", channel: 1) }),
                ("consume a status shard", { try $0.consume(queue: BrokerTopology.statusShardQueue(0), channel: 1) }),
                ("consume a processor's jobs", { try $0.consume(queue: BrokerTopology.jobQueue(processor: "amd64"), channel: 1) }),
                ("bind its queue to the jobs", { try $0.bindQueue("ev-public.events", exchange: BrokerTopology.jobsExchange, routingKey: "amd64") }),
                ("publish a build event", {
                    try $0.publish(exchange: BrokerTopology.eventsExchange, routingKey: "amd64.FULLYBUILT", body: Array("{}".utf8),
                                   properties: MessageProperties(userID: "ev-public"), channel: 1) }),
            ]
            for (what, operation) in refused {
                let refusal = try await attempt("ev-public", operation)
                #expect(refusal?.code == 403, "ev-public tried to \(what): \(refusal.map { "\($0)" } ?? "allowed")")
            }
        }
    }

    /// The publisher's order, on the database alone: a line whose transaction is still running holds back
    /// every line after it (nothing is passed over and lost), and a build's line that an older transaction
    /// wrote comes after the build's earlier line, not before.
    @Test func aLineOfARunningTransactionHoldsTheCursorAndABuildsLinesStayInOrder() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown(); Task { await database.drop() } }
        try await store.addNobleProcessors(["amd64"])
        let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                        sourceName: "order", sourceVersion: "1.0"))
        let holder = "test"
        let start = try #require(try await store.holdEventPublisher(holder: holder, leaseSeconds: 30))
        // The submit's own line first. (Transaction ids are the whole server's: a transaction of another database
        // on it - another test's - holds publishing back as well, until it ends.)
        nonisolated(unsafe) var first: (messages: [BuilddStore.BuildEventMessage], next: BuilddStore.EventCursor?) = ([], nil)
        _ = try await eventually(timeout: .seconds(90)) {
            first = try await store.eventsToPublish(after: start, limit: 100)
            return !first.messages.isEmpty
        }
        #expect(first.messages.map(\.status) == ["NEEDSBUILD"])
        let cursor = try #require(first.next)
        #expect(try await store.advanceEventCursor(holder: holder, to: cursor))
        #expect(try await store.advanceEventCursor(holder: "someone-else", to: cursor) == false)

        // Two sessions of their own: `older` takes its transaction id first and writes its line of the build last.
        nonisolated(unsafe) let older = try PostgresConnection(url: database.url)
        nonisolated(unsafe) let newer = try PostgresConnection(url: database.url)
        try await runBlocking {
            _ = try older.execute("BEGIN")
            _ = try older.query("SELECT pg_current_xact_id()")
            _ = try newer.execute("BEGIN")
            _ = try newer.execute("INSERT INTO build_event (build_id, status, attempt, message) VALUES ($1, 'BUILDING', 1, 'newer')", [build])
            _ = try newer.execute("COMMIT")
            _ = try older.execute("INSERT INTO build_event (build_id, status, attempt, message) VALUES ($1, 'UPLOADING', 1, 'older')", [build])
        }
        // While `older` runs, its line and every line after its transaction id wait.
        let held = try await store.eventsToPublish(after: cursor, limit: 100)
        #expect(held.messages.isEmpty && held.next == nil, "published past a running transaction: \(held.messages.map(\.message))")
        try await runBlocking { _ = try older.execute("COMMIT") }
        nonisolated(unsafe) var next: (messages: [BuilddStore.BuildEventMessage], next: BuilddStore.EventCursor?) = ([], nil)
        _ = try await eventually(timeout: .seconds(90)) {
            next = try await store.eventsToPublish(after: cursor, limit: 100)
            return !next.messages.isEmpty
        }
        // By (xid, id) the older transaction's line comes first; the build's order puts "newer" (its earlier
        // line) before it, so it is published first (and again when the cursor reaches it).
        #expect(next.messages.map { $0.message ?? "" } == ["newer", "older"], "\(next.messages.map(\.message))")
        #expect(next.messages.map(\.seq) == [2, 3])
    }
}
