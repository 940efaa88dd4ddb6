import BuilddShared
import Logging
import Synchronization

/// A broker connection on a thread of its own, reconnecting with backoff, bridged to async code.
///
/// Channel 1 publishes in confirm mode; channel 2 consumes (``AMQPClient/consumeChannel``). After every
/// (re)connect the `setup` closure runs on the connection's thread to declare topology and start
/// consumers. The thread keeps calling into librabbitmq (at least twice per heartbeat interval), so
/// heartbeats flow even when the application is quiet.
public final class AMQPClient: @unchecked Sendable {
    /// Channel used for publishing (confirm mode) and declarations.
    public static let publishChannel: UInt16 = 1
    /// Channel used for consumers.
    public static let consumeChannel: UInt16 = 2
    /// Channel used for `basic.get` (no consumers on it).
    public static let getChannel: UInt16 = 3

    /// The wait between two rounds of connection attempts starts here and doubles up to ``longestBackoff``.
    static let firstBackoff = Duration.milliseconds(250)
    static let longestBackoff = Duration.seconds(10)
    /// Each wait is the backoff times a factor drawn from this range, so clients do not come back in step.
    static let jitter = 0.8...1.2
    /// The longest a client waits between two rounds of connection attempts: once the broker is back, every
    /// client is connected again within this (plus the time its attempts take).
    public static let longestReconnectWait = longestBackoff * jitter.upperBound

    public enum ConnectionEvent: Sendable {
        case connected(generation: Int)
        case disconnected(reason: String)
    }

    private struct PendingPublish {
        let messageID: String
        var returned: (code: Int, text: String)?
        /// Called once on the connection thread with the broker's verdict.
        let complete: (Result<Void, Error>) -> Void
    }

    /// One message of ``publishAll(exchange:mandatory:_:)``.
    public struct OutgoingMessage: Sendable {
        public var routingKey: String
        public var body: [UInt8]
        public var properties: MessageProperties

        public init(routingKey: String, body: [UInt8], properties: MessageProperties = .init()) {
            self.routingKey = routingKey
            self.body = body
            self.properties = properties
        }
    }

    public let configuration: AMQPConfiguration
    public let deliveries: AsyncStream<Delivery>
    public let connectionEvents: AsyncStream<ConnectionEvent>
    private let deliveryContinuation: AsyncStream<Delivery>.Continuation
    private let eventContinuation: AsyncStream<ConnectionEvent>.Continuation
    private let setup: @Sendable (AMQPConnection) throws -> Void
    private let mailbox = Mailbox()
    private let logger: Logger
    private let stopping = Mutex(false)
    private let connectedGeneration = Mutex<Int?>(nil)
    private let connectedSince = Mutex<ContinuousClock.Instant?>(nil)
    private let finished = Mutex<CheckedContinuation<Void, Never>?>(nil)
    private let threadDone = Mutex(false)

    private let connectedNode = Mutex<ServiceURL?>(nil)

    // Confined to the connection thread:
    private var connection: AMQPConnection?
    /// The node of ``AMQPConfiguration/nodes`` to connect to next.
    private var nodeIndex = 0
    private var generation = 0
    private var pending: [UInt64: PendingPublish] = [:]
    /// Deliveries of the current connection not yet acked or rejected, by channel (connection thread only):
    /// what lets ``ackAll(_:)`` ack a whole batch with one frame when nothing older is outstanding.
    private var unsettled: [UInt16: Set<UInt64>] = [:]
    private var publishCounter: UInt64 = 0

    public init(configuration: AMQPConfiguration, logger: Logger,
                setup: @escaping @Sendable (AMQPConnection) throws -> Void = { _ in }) {
        self.configuration = configuration
        self.logger = logger
        self.setup = setup
        (deliveries, deliveryContinuation) = AsyncStream.makeStream(of: Delivery.self)
        (connectionEvents, eventContinuation) = AsyncStream.makeStream(of: ConnectionEvent.self)
    }

    /// Starts the connection thread. Call once.
    public func start() {
        startThread(name: "amqp-\(configuration.connectionName)") { [self] in self.loop() }
    }

    /// The node the client is connected to, if it is.
    public var currentNode: ServiceURL? { connectedNode.withLock { $0 } }

    /// The generation of the live connection, if one is up.
    public var currentGeneration: Int? { connectedGeneration.withLock { $0 } }

    /// How long the current connection has been up, or nil while disconnected.
    public var connectedFor: Duration? { connectedSince.withLock { $0.map { ContinuousClock.now - $0 } } }

    /// Waits until a connection is up (or `timeout` passes).
    public func waitUntilConnected(timeout: Duration = .seconds(30)) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while currentGeneration == nil {
            if clock.now > deadline {
                throw AMQPError(.notConnected, text: "broker not reachable within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    // MARK: Thread

    private func loop() {
        var backoff = Self.firstBackoff
        // Which of the cluster's nodes to try next: a failed attempt goes on to the next node at once, and the
        // client backs off only after a whole round; a lost connection is made again on the next node.
        var failedInRound = 0
        while !stopping.withLock({ $0 }) {
            if connection == nil {
                let target = configuration.node(nodeIndex)
                do {
                    generation += 1
                    let fresh = try AMQPConnection(configuration: target, generation: generation)
                    try fresh.openChannel(Self.publishChannel)
                    try fresh.confirmSelect(channel: Self.publishChannel)
                    try fresh.openChannel(Self.consumeChannel)
                    try fresh.openChannel(Self.getChannel)
                    try setup(fresh)
                    connection = fresh
                    publishCounter = 0
                    backoff = Self.firstBackoff
                    connectedGeneration.withLock { $0 = generation }
                    connectedSince.withLock { $0 = ContinuousClock.now }
                    failedInRound = 0
                    connectedNode.withLock { $0 = target.url }
                    logger.info("broker connected", metadata: [
                        "broker.url": "\(target.url)", "amqp.generation": "\(generation)"])
                    eventContinuation.yield(.connected(generation: generation))
                } catch {
                    logger.warning("broker connection failed", metadata: [
                        "broker.url": "\(target.url)", "error": "\(error)"])
                    runJobs()  // fail what was queued meanwhile
                    nodeIndex += 1
                    failedInRound += 1
                    if failedInRound < configuration.nodes.count { continue }
                    failedInRound = 0
                    let wait = backoff * Double.random(in: Self.jitter)
                    mailbox.wait(timeoutMilliseconds: Int32(wait.components.seconds * 1000
                        + wait.components.attoseconds / 1_000_000_000_000_000))
                    backoff = min(backoff * 2, Self.longestBackoff)
                    continue
                }
            }
            runJobs()
            guard let current = connection else { continue }
            do {
                try pump(current)
                if !current.hasBufferedInput && !mailbox.hasJobs {
                    // Sleep until the socket is readable, a job is posted, or it is time to send a heartbeat;
                    // then let librabbitmq read what came and send what is due.
                    let heartbeatMs = max(100, Int32(configuration.heartbeat.components.seconds * 1000 / 3))
                    mailbox.wait(timeoutMilliseconds: min(heartbeatMs, 1000), extraDescriptor: current.socketDescriptor)
                    try pump(current)
                }
            } catch {
                drop(reason: "\(error)")
            }
        }
        runJobs()
        connection?.close()
        if connection != nil { drop(reason: "shutdown") }
        connection = nil
        deliveryContinuation.finish()
        eventContinuation.finish()
        threadDone.withLock { $0 = true }
        finished.withLock { $0?.resume(); $0 = nil }
    }

    private func runJobs() {
        for job in mailbox.drain() { job() }
        if let current = connection, current.isBroken { drop(reason: "connection broken") }
    }

    private func pump(_ current: AMQPConnection) throws {
        while let event = try current.nextEvent(timeout: .zero) {
            handle(event)
        }
    }

    private func handle(_ event: AMQPEvent) {
        switch event {
        case .delivery(let delivery):
            unsettled[delivery.channel, default: []].insert(delivery.deliveryTag)
            deliveryContinuation.yield(delivery)
        case .confirm(let channel, let tag, let multiple, let ack):
            guard channel == Self.publishChannel else { return }
            let settled = multiple ? pending.keys.filter { $0 <= tag } : [tag]
            for key in settled.sorted() {
                guard let entry = pending.removeValue(forKey: key) else { continue }
                if !ack {
                    entry.complete(.failure(AMQPError(.nacked, text: "broker refused the message")))
                } else if let returned = entry.returned {
                    entry.complete(.failure(AMQPError(.unroutable, code: returned.code, text: returned.text)))
                } else {
                    entry.complete(.success(()))
                }
            }
        case .returned(_, let messageID, let code, let text):
            if let key = pending.filter({ $0.value.messageID == messageID && $0.value.returned == nil }).keys.min() {
                pending[key]?.returned = (code, text)
            }
        case .consumerCancelled(_, let tag):
            logger.warning("broker cancelled consumer", metadata: ["amqp.consumer": "\(tag)"])
            // Re-running setup on a fresh connection restores consumers of queues that exist again.
            connection?.close()
            drop(reason: "consumer \(tag) cancelled by broker")
        }
    }

    private func drop(reason: String) {
        if connection != nil && reason != "shutdown" { nodeIndex += 1 }  // made again on the next node
        connection?.close()
        connection = nil
        connectedNode.withLock { $0 = nil }
        unsettled = [:]
        connectedGeneration.withLock { $0 = nil }
        connectedSince.withLock { $0 = nil }
        let failed = pending
        pending.removeAll()
        for (_, entry) in failed {
            entry.complete(.failure(AMQPError(.notConnected, text: "connection lost before confirm: \(reason)")))
        }
        if !stopping.withLock({ $0 }) {
            logger.warning("broker connection lost", metadata: ["error": "\(reason)"])
        }
        eventContinuation.yield(.disconnected(reason: reason))
    }

    // MARK: API

    /// Runs `body` on the connection thread with the live connection.
    public func perform<T: Sendable>(_ body: @escaping @Sendable (AMQPConnection) throws -> T) async throws -> T {
        if threadDone.withLock({ $0 }) { throw AMQPError(.notConnected, text: "client stopped") }
        return try await withCheckedThrowingContinuation { continuation in
            mailbox.post { [self] in
                guard let current = connection, !current.isBroken else {
                    continuation.resume(throwing: AMQPError(.notConnected, text: "not connected to the broker"))
                    return
                }
                continuation.resume(with: Result { try body(current) })
            }
        }
    }

    /// Publishes a persistent message and returns once the broker confirmed it.
    /// With `mandatory`, a message that no queue takes fails with ``AMQPError/Kind/unroutable``.
    public func publish(exchange: String, routingKey: String, body: [UInt8], properties: MessageProperties = .init(),
                        mandatory: Bool = false) async throws {
        try await publish(exchange: exchange, mandatory: mandatory) { (routingKey, body, properties) }
    }

    /// Publishes a message built on the connection thread at the moment it is sent, and waits for its
    /// confirm. Messages made this way reach the channel in the order `make` runs, so a sequence number
    /// assigned inside `make` increases in publish order.
    public func publish(exchange: String, mandatory: Bool = false,
                        make: @escaping @Sendable () -> (routingKey: String, body: [UInt8], properties: MessageProperties)) async throws {
        if threadDone.withLock({ $0 }) { throw AMQPError(.notConnected, text: "client stopped") }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            mailbox.post { [self] in
                let (routingKey, body, properties) = make()
                send(exchange: exchange, mandatory: mandatory,
                     OutgoingMessage(routingKey: routingKey, body: body, properties: properties)) {
                    continuation.resume(with: $0)
                }
            }
        }
    }

    /// Publishes messages in this order, several confirms in flight, and returns each one's outcome.
    public func publishAll(exchange: String, mandatory: Bool = false,
                           _ messages: [OutgoingMessage]) async -> [Result<Void, Error>] {
        if messages.isEmpty { return [] }
        if threadDone.withLock({ $0 }) {
            return messages.map { _ in .failure(AMQPError(.notConnected, text: "client stopped")) }
        }
        return await withCheckedContinuation { (continuation: CheckedContinuation<[Result<Void, Error>], Never>) in
            mailbox.post { [self] in
                // Touched only on this thread, by the completions below.
                final class Collector: @unchecked Sendable {
                    var results: [Result<Void, Error>?]
                    var remaining: Int
                    init(count: Int) { results = Array(repeating: nil, count: count); remaining = count }
                }
                let collector = Collector(count: messages.count)
                for (index, message) in messages.enumerated() {
                    send(exchange: exchange, mandatory: mandatory, message) { result in
                        collector.results[index] = result
                        collector.remaining -= 1
                        if collector.remaining == 0 { continuation.resume(returning: collector.results.map { $0! }) }
                    }
                }
            }
        }
    }

    /// Publishes on the connection thread and registers the completion for the confirm.
    private func send(exchange: String, mandatory: Bool, _ message: OutgoingMessage,
                      complete: @escaping (Result<Void, Error>) -> Void) {
        guard let current = connection, !current.isBroken else {
            complete(.failure(AMQPError(.notConnected, text: "not connected to the broker")))
            return
        }
        publishCounter += 1
        var properties = message.properties
        let messageID = properties.messageID ?? "m\(generation).\(publishCounter)"
        properties.messageID = messageID
        do {
            let tag = try current.publish(exchange: exchange, routingKey: message.routingKey, body: message.body,
                                          properties: properties, mandatory: mandatory, channel: Self.publishChannel)
            pending[tag] = PendingPublish(messageID: messageID, returned: nil, complete: complete)
        } catch {
            complete(.failure(error))
        }
    }

    /// Takes one message from `queue` without a consumer (`basic.get`, manual ack), or nil when it is empty.
    public func get(queue: String) async throws -> Delivery? {
        try await perform { try $0.get(queue: queue, channel: Self.getChannel) }
    }

    /// Acknowledges a delivery. A delivery of a dropped connection needs no ack: the broker requeued it.
    public func ack(_ delivery: Delivery) async throws {
        try await ackAll([delivery])
    }

    /// Acknowledges several deliveries in one hop to the connection thread. On each channel, when no
    /// older delivery is still outstanding, one `basic.ack` with `multiple` covers them all; otherwise each
    /// is acked alone. Deliveries of a dropped connection are skipped: the broker requeued them.
    public func ackAll(_ deliveries: [Delivery]) async throws {
        guard !deliveries.isEmpty else { return }
        try await perform { connection in
            let current = deliveries.filter { $0.generation == connection.generation }
            for (channel, batch) in Dictionary(grouping: current, by: \.channel) {
                let tags = Set(batch.map(\.deliveryTag))
                var open = self.unsettled[channel] ?? []
                open.subtract(tags)
                self.unsettled[channel] = open
                let newest = tags.max()!
                // Only consumers' deliveries are tracked (`basic.get` answers are not): multiple only there.
                if tags.count > 1, channel == Self.consumeChannel, !open.contains(where: { $0 < newest }) {
                    try connection.ack(deliveryTag: newest, multiple: true, channel: channel)
                } else {
                    for tag in tags.sorted() { try connection.ack(deliveryTag: tag, multiple: false, channel: channel) }
                }
            }
        }
    }

    /// Rejects a delivery; without requeue it is dead-lettered.
    public func reject(_ delivery: Delivery, requeue: Bool) async throws {
        try await perform { connection in
            guard connection.generation == delivery.generation else { return }
            self.unsettled[delivery.channel]?.remove(delivery.deliveryTag)
            try connection.reject(deliveryTag: delivery.deliveryTag, requeue: requeue, channel: delivery.channel)
        }
    }

    /// Drops the connection and makes it again, on the next node, running setup anew: what it had not
    /// acknowledged goes back to its queues, and pending publishes fail.
    public func reconnect(reason: String) {
        mailbox.post { [self] in
            if connection != nil { drop(reason: reason) }
        }
    }

    /// Closes the connection and stops the thread; pending publishes fail.
    public func shutdown() async {
        stopping.withLock { $0 = true }
        mailbox.post {}
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = threadDone.withLock { done -> Bool in
                if !done { finished.withLock { $0 = continuation } }
                return done
            }
            if done { continuation.resume() }
        }
    }
}
