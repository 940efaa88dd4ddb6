import AMQP
import BuilddShared
import Logging
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(5))) struct AMQPIntegrationTests {
    let logger = Logger(label: "test")

    func client(_ vhost: TestVhost, setup: @escaping @Sendable (AMQPConnection) throws -> Void = { _ in }) async throws -> AMQPClient {
        let client = AMQPClient(configuration: try AMQPConfiguration(url: vhost.brokerURL, connectionName: "test"),
                                logger: logger, setup: setup)
        client.start()
        try await client.waitUntilConnected()
        return client
    }

    /// amqps: the broker's certificate is checked against the given CA and its name; a client that trusts
    /// another CA, or reaches the broker by a name the certificate does not carry, does not connect.
    @Test func tlsConnectionsCheckTheBrokersCertificate() async throws {
        let url = try TestEnvironment.amqpsURL
        func connect(_ text: String) async throws -> Result<Int, Error> {
            let configuration = try AMQPConfiguration(url: text, connectionName: "tls-test")
            return try await runBlocking {
                Result {
                    let connection = try AMQPConnection(configuration: configuration)
                    defer { connection.close() }
                    try connection.openChannel(1)
                    try connection.confirmSelect(channel: 1)
                    let queue = "tls-\(randomHexToken(bytes: 4))"
                    try connection.declareQueue(queue, durable: false, exclusive: true, autoDelete: true)
                    try connection.publish(exchange: "", routingKey: queue, body: Array("over TLS".utf8),
                                           properties: MessageProperties(), channel: 1)
                    let deadline = ContinuousClock.now + .seconds(10)
                    while true {
                        if case .confirm? = try connection.nextEvent(timeout: .seconds(1)) { break }
                        guard ContinuousClock.now < deadline else {
                            throw WaitTimedOut(description: "no publisher confirm within 10 s over TLS")
                        }
                    }
                    // A round trip: the message comes back.
                    let got = try connection.get(queue: queue, channel: 1)
                    return got.map { String(decoding: $0.body, as: UTF8.self) == "over TLS" ? 1 : 0 } ?? 0
                }
            }
        }
        let good = try await connect(url)
        #expect((try? good.get()) == 1, "\(good)")
        // Without our CA the system's bundle does not trust the broker.
        let withoutCA = url.components(separatedBy: "?").first!
        let untrusted = try await connect(withoutCA)
        #expect(throws: AMQPError.self) { try untrusted.get() }
        // The certificate names localhost, not 127.0.0.1.
        let byAddress = url.replacingOccurrences(of: "@localhost:", with: "@127.0.0.1:")
        let wrongName = try await connect(byAddress)
        #expect(throws: AMQPError.self) { try wrongName.get() }
        // verify=false connects anyway (laboratories only).
        let unchecked = try await connect(byAddress + "&verify=false")
        #expect((try? unchecked.get()) == 1, "\(unchecked)")
        // A missing CA file is a clear error before any connection.
        let missing = url.replacingOccurrences(of: "cacert=", with: "cacert=/nonexistent")
        let refused = try await connect(missing)
        #expect(throws: AMQPError.self) { try refused.get() }
        if case .failure(let error) = refused { #expect("\(error)".contains("CA certificate")) }
    }

    @Test func publishesWithConfirmsAndConsumesWithManualAcks() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let client = try await client(vhost) { connection in
            try connection.declareQueue("work")
            try connection.qos(prefetch: 10, channel: AMQPClient.consumeChannel)
            try connection.consume(queue: "work", channel: AMQPClient.consumeChannel)
        }
        let count = 200
        let messages = (0..<count).map { AMQPClient.OutgoingMessage(routingKey: "work", body: Array("m\($0)".utf8)) }
        let results = await client.publishAll(exchange: "", mandatory: true, messages)
        #expect(results.allSatisfy { (try? $0.get()) != nil })
        let received = try await within(.seconds(30), waitingFor: "\(count) deliveries") {
            var received: [String] = []
            for await delivery in client.deliveries {
                received.append(String(decoding: delivery.body, as: UTF8.self))
                #expect(delivery.properties.persistent)
                try await client.ack(delivery)
                if received.count == count { break }
            }
            return received
        }
        #expect(received == (0..<count).map { "m\($0)" })
        #expect(try await eventually { try await vhost.messageCount(queue: "work") == 0 })
        await client.shutdown()
    }

    /// A cluster's nodes, tried in turn: a node that cannot be reached is passed over at once, and a client
    /// whose node goes away connects to the next one (two brokers stand for two nodes of a cluster here).
    @Test func aClientGoesOnToTheNextNodeWhenItsNodeIsDownOrLost() async throws {
        let broker = try await PrivateBroker.start()
        try await closing(broker) {
            let shared = try ServiceURL(parsing: try TestEnvironment.brokerURL)
            let sharedRoot = "amqp://guest:guest@\(shared.host):\(shared.port)/"
            let dead = "amqp://guest:guest@127.0.0.1:\(try FarmHarness.freePort())/"
            let configuration = try AMQPConfiguration(url: "\(dead), \(broker.url), \(sharedRoot)", connectionName: "cluster-test")
            #expect(configuration.nodes.count == 3)
            let queue = "cluster-\(randomHexToken(bytes: 4))"
            let client = AMQPClient(configuration: configuration, logger: logger) { connection in
                try connection.declareQueue(queue, durable: false, autoDelete: false)
            }
            client.start()
            try await client.waitUntilConnected(timeout: .seconds(20))
            #expect(client.currentNode?.port == broker.amqpPort, "the unreachable first node is passed over")
            try await client.publish(exchange: "", routingKey: queue, body: Array("one".utf8))
            let generation = client.currentGeneration
            try await broker.run("broker-down")
            let moved = try await eventually(timeout: .seconds(30), interval: .milliseconds(100)) {
                client.currentGeneration != nil && client.currentGeneration != generation
            }
            #expect(moved, "reconnected after its node went away")
            #expect(client.currentNode?.port == shared.port, "now on the next node")
            try await client.publish(exchange: "", routingKey: queue, body: Array("two".utf8))
            try await client.perform { try $0.deleteQueue(queue) }
            await client.shutdown()
        }
    }

    /// A batch is acked in one hop, with one `multiple` frame only when nothing older is outstanding: an
    /// older delivery still being worked on is never acked with it.
    @Test func aBatchAckNeverCoversAnOlderDeliveryStillOutstanding() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let setup: @Sendable (AMQPConnection) throws -> Void = { connection in
            try connection.declareQueue("batch")
            try connection.qos(prefetch: 50, channel: AMQPClient.consumeChannel)
            try connection.consume(queue: "batch", channel: AMQPClient.consumeChannel)
        }
        let first = try await client(vhost, setup: setup)
        let results = await first.publishAll(exchange: "", mandatory: true,
                                             (0..<6).map { AMQPClient.OutgoingMessage(routingKey: "batch", body: Array("m\($0)".utf8)) })
        #expect(results.allSatisfy { (try? $0.get()) != nil })
        let got = try await within(.seconds(30), waitingFor: "6 deliveries") {
            var got: [Delivery] = []
            for await delivery in first.deliveries {
                got.append(delivery)
                if got.count == 6 { break }
            }
            return got
        }
        // m0 is still being worked on; m1...m3 are done; then m4 and m5, with m0 still open.
        try await first.ackAll(Array(got[1...3]))
        try await first.ackAll(Array(got[4...5]))
        #expect(try await eventually { try await vhost.messageCount(queue: "batch") == 1 })
        await first.shutdown()
        // The connection is gone: only m0 comes back.
        let second = try await client(vhost, setup: setup)
        let again = try await within(.seconds(30), waitingFor: "the redelivery") {
            var iterator = second.deliveries.makeAsyncIterator()
            return await iterator.next()
        }
        #expect(again.map { String(decoding: $0.body, as: UTF8.self) } == "m0")
        #expect(again?.redelivered == true)
        if let again { try await second.ackAll([again]) }
        #expect(try await eventually { try await vhost.messageCount(queue: "batch") == 0 })
        await second.shutdown()
    }

    @Test func rejectedMessagesAreDeadLettered() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let client = try await client(vhost) { connection in
            try BrokerTopology.declareMaster(on: connection)
            try connection.declareQueue("inbox", arguments: ["x-dead-letter-exchange": .string(BrokerTopology.deadLetterExchange)])
            try connection.consume(queue: "inbox", channel: AMQPClient.consumeChannel)
        }
        try await client.publish(exchange: "", routingKey: "inbox", body: Array("{broken".utf8),
                                 properties: MessageProperties(userID: "guest", headers: ["builder": .string("x")]))
        let delivery = try #require(try await within(.seconds(15), waitingFor: "the published message") {
            var iterator = client.deliveries.makeAsyncIterator()
            return await iterator.next()
        })
        #expect(delivery.properties.userID == "guest")
        #expect(delivery.properties.headers["builder"] == .string("x"))
        try await client.reject(delivery, requeue: false)
        #expect(try await eventually { try await vhost.messageCount(queue: BrokerTopology.deadLetterQueue) == 1 })
        await client.shutdown()
    }

    @Test func unroutableMandatoryPublishFails() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let client = try await client(vhost) { try BrokerTopology.declareMaster(on: $0) }
        do {
            try await client.publish(exchange: BrokerTopology.jobsExchange, routingKey: "no-such-processor",
                                     body: [1], mandatory: true)
            Issue.record("unroutable message was confirmed as delivered")
        } catch let error as AMQPError {
            #expect(error.kind == .unroutable)
            #expect(error.code == 312)
        }
        await client.shutdown()
    }

    @Test func brokerErrorsCarryReplyCodeAndTheClientRecovers() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let client = try await client(vhost) { try $0.declareQueue("q", arguments: ["x-max-length": .int(5)]) }
        do {
            try await client.perform { try $0.declareQueue("q", arguments: ["x-max-length": .int(6)]) }
            Issue.record("inequivalent declaration accepted")
        } catch let error as AMQPError {
            #expect(error.kind == .server)
            #expect(error.code == 406)
            #expect(error.text.contains("PRECONDITION_FAILED"))
        }
        // The channel error dropped the connection; the client reconnects and works again.
        #expect(try await eventually(timeout: .seconds(15)) {
            (try? await client.publish(exchange: "", routingKey: "q", body: [1], mandatory: true)) != nil
        })
        await client.shutdown()
    }

    @Test func wrongCredentialsFailWithoutShowingThePassword() async throws {
        let vhost = try await TestVhost.create()
        defer { Task { await vhost.delete() } }
        let url = vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "guest:wr0ng-pass@")
        let configuration = try AMQPConfiguration(url: url)
        let error = try await runBlocking { () -> String in
            do {
                _ = try AMQPConnection(configuration: configuration)
                return "connected"
            } catch {
                return "\(error)"
            }
        }
        #expect(error != "connected")
        #expect(error.contains("login"))
        #expect(!error.contains("wr0ng-pass"))
    }
}
