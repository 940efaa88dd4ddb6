#if canImport(Glibc)
import Glibc
#endif
import AMQP
import BuilddShared
import Postgres
import Synchronization

/// What one durable commit costs on this database: the floor under every state change of a build.
enum PostgresFloor {
    /// - Returns: commit latency percentiles (one connection, one row per transaction) and commits per
    ///   second with one and with `connections` connections committing at once (group commit).
    static func run(url: String, samples: Int, connections: Int, seconds: Double) async throws -> [String: Double] {
        try await runBlocking(name: "pg-floor") {
            let connection = try PostgresConnection(url: url, applicationName: "buildd-bench")
            defer { connection.close() }
            try connection.execute("SET client_min_messages = warning")
            try connection.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, payload text NOT NULL)")
            try connection.execute("TRUNCATE bench_floor")
            let fsync = try connection.query("SHOW fsync").first!.string("fsync")
            let commit = try connection.query("SHOW synchronous_commit").first!.string("synchronous_commit")
            guard fsync == "on", commit == "on" else {
                throw BenchError("the database is not durable (fsync=\(fsync), synchronous_commit=\(commit)): figures would mislead")
            }
            var latency = Samples()
            for index in 0..<samples {
                let start = now()
                try connection.execute("INSERT INTO bench_floor (payload) VALUES ($1)", ["sample \(index)"])
                latency.add(milliseconds(since: start))
            }
            progress("postgres: \(samples) single-row commits, p50 \(latency.percentile(50)) ms")
            let one = try commitsPerSecond(url: url, connections: 1, seconds: seconds)
            let many = try commitsPerSecond(url: url, connections: connections, seconds: seconds)
            return ["commit_p50_ms": latency.percentile(50), "commit_p99_ms": latency.percentile(99),
                    "commits_per_s_1": one, "commits_per_s_n": many, "connections": Double(connections)]
        }
    }

    private static func commitsPerSecond(url: String, connections: Int, seconds: Double) throws -> Double {
        let total = Mutex(0)
        let failure = Mutex<String?>(nil)
        let done = Mutex(0)
        let deadline = now() + seconds
        for worker in 0..<connections {
            startThread(name: "pg-floor-\(worker)") {
                do {
                    let connection = try PostgresConnection(url: url, applicationName: "buildd-bench")
                    defer { connection.close() }
                    var count = 0
                    while now() < deadline {
                        try connection.execute("INSERT INTO bench_floor (payload) VALUES ($1)", ["w\(worker)"])
                        count += 1
                    }
                    total.withLock { $0 += count }
                } catch {
                    failure.withLock { $0 = "\(error)" }
                }
                done.withLock { $0 += 1 }
            }
        }
        while done.withLock({ $0 }) < connections { usleep(10_000) }
        if let failure = failure.withLock({ $0 }) { throw BenchError("postgres floor: \(failure)") }
        let rate = Double(total.withLock { $0 }) / seconds
        progress("postgres: \(connections) connection(s) committing for \(seconds) s: \(Int(rate)) commits/s")
        return rate
    }
}

/// What the broker costs on its own, through the same librabbitmq wrapper the farm uses: a persistent
/// message to a durable queue with a publisher confirm, and a consumer with manual acks.
enum BrokerFloor {
    static let queue = "bench.floor"

    static func run(url: String, samples: Int, messages: Int) async throws -> [String: Double] {
        try await runBlocking(name: "amqp-floor") {
            let configuration = try AMQPConfiguration(url: url, connectionName: "buildd-bench-publisher")
            let publisher = try AMQPConnection(configuration: configuration)
            defer { publisher.close() }
            try publisher.openChannel(1)
            try publisher.confirmSelect(channel: 1)
            _ = try? publisher.deleteQueue(queue, channel: 1)
            _ = try publisher.declareQueue(queue, durable: true, channel: 1)
            let properties = MessageProperties(type: "bench")
            let body = Array(repeating: UInt8(ascii: "x"), count: 600)  // about the size of a job message

            // 1. Publish one, wait for its confirm.
            var confirm = Samples()
            for _ in 0..<samples {
                let start = now()
                let tag = try publisher.publish(exchange: "", routingKey: queue, body: body, properties: properties, channel: 1)
                try waitConfirm(publisher, upTo: tag)
                confirm.add(milliseconds(since: start))
            }
            progress("broker: confirmed publish p50 \(confirm.percentile(50)) ms")

            // 2. Publish one, wait until a consumer on another connection has it.
            let consumer = try AMQPConnection(configuration: try AMQPConfiguration(url: url, connectionName: "buildd-bench-consumer"))
            defer { consumer.close() }
            try consumer.openChannel(1)
            try consumer.qos(prefetch: 200, channel: 1)
            try consumer.consume(queue: queue, channel: 1)
            try drain(consumer, expected: samples)  // the messages of step 1
            var roundTrip = Samples()
            for index in 0..<samples {
                let start = now()
                let tag = try publisher.publish(exchange: "", routingKey: queue, body: body, properties: properties, channel: 1)
                try waitConfirm(publisher, upTo: tag)
                try drain(consumer, expected: 1)
                roundTrip.add(milliseconds(since: start))
                if index == 0 { roundTrip = Samples() }  // the first includes the consumer's start
            }
            progress("broker: publish-confirm-consume p50 \(roundTrip.percentile(50)) ms")

            consumer.close()

            // 3. Throughput: publishing with 100 confirms in flight while a consumer acks on another connection.
            let consumerDone = Mutex<String?>(nil)
            let start = now()
            let finished = Mutex(false)
            startThread(name: "amqp-floor-consumer") {
                do {
                    let consumer = try AMQPConnection(configuration: try AMQPConfiguration(
                        url: url, connectionName: "buildd-bench-consumer"))
                    defer { consumer.close() }
                    try consumer.openChannel(1)
                    try consumer.qos(prefetch: 200, channel: 1)
                    try consumer.consume(queue: queue, channel: 1)
                    try drain(consumer, expected: messages)
                } catch {
                    consumerDone.withLock { $0 = "\(error)" }
                }
                finished.withLock { $0 = true }
            }
            // Delivery tags of the channel go on from steps 1 and 2.
            let base = UInt64(2 * samples)
            var published = base
            var confirmed = base
            while confirmed < base + UInt64(messages) {
                while published < base + UInt64(messages), published - confirmed < 100 {
                    published = try publisher.publish(exchange: "", routingKey: queue, body: body, properties: properties,
                                                      channel: 1)
                }
                confirmed = max(confirmed, try nextConfirm(publisher))
            }
            let publishSeconds = now() - start
            while !finished.withLock({ $0 }) { usleep(1000) }
            if let error = consumerDone.withLock({ $0 }) { throw BenchError("broker floor consumer: \(error)") }
            let seconds = now() - start
            progress("broker: \(messages) messages published (confirmed) and consumed in \(seconds) s")
            _ = try? publisher.deleteQueue(queue, channel: 1)
            return ["confirm_p50_ms": confirm.percentile(50), "confirm_p99_ms": confirm.percentile(99),
                    "roundtrip_p50_ms": roundTrip.percentile(50), "roundtrip_p99_ms": roundTrip.percentile(99),
                    "publish_per_s": Double(messages) / publishSeconds, "through_per_s": Double(messages) / seconds]
        }
    }

    /// Reads frames until the confirm for `tag` (or a later multiple one) arrived.
    private static func waitConfirm(_ connection: AMQPConnection, upTo tag: UInt64) throws {
        while try nextConfirm(connection) < tag {}
    }

    /// The highest tag the next confirm settles.
    private static func nextConfirm(_ connection: AMQPConnection) throws -> UInt64 {
        while true {
            switch try connection.nextEvent(timeout: .seconds(10)) {
            case .confirm(_, let tag, _, let ack)?:
                guard ack else { throw BenchError("the broker nacked a publish") }
                return tag
            case nil: throw BenchError("no confirm within 10 s")
            default: continue
            }
        }
    }

    /// Consumes and acks `expected` messages on a connection that consumes the floor queue on channel 1.
    private static func drain(_ connection: AMQPConnection, expected: Int) throws {
        var count = 0
        while count < expected {
            let delivery: Delivery
            switch try connection.nextEvent(timeout: .seconds(10)) {
            case .delivery(let arrived)?: delivery = arrived
            case nil: throw BenchError("no message within 10 s (\(count) of \(expected) consumed)")
            default: continue
            }
            try connection.ack(deliveryTag: delivery.deliveryTag, channel: 1)
            count += 1
        }
    }
}
