/// Names and declarations of buildd's exchanges and queues (DESIGN.md, Broker topology).
///
/// | name | type | what flows |
/// |---|---|---|
/// | `buildd.jobs` | direct, key = processor | jobs into `buildd.jobs.<processor>` |
/// | `buildd.status` | topic, key `<builder>.<event>` | agent events, re-routed to `buildd.status.hash` |
/// | `buildd.status.hash` | x-consistent-hash on header `builder` | into shard queues `buildd.status.shard.<n>` |
/// | `buildd.control` | direct, key = builder | master -> one agent, into `buildd.control.<builder>` |
/// | `buildd.dlx` | fanout | messages that could not be read or applied, into `buildd.dead` |
///
/// Status shards have `x-single-active-consumer`, so each is drained by one master at a time (in order),
/// and another master's consumer takes over when that one dies.
public enum BrokerTopology {
    public static let jobsExchange = "buildd.jobs"
    public static let statusExchange = "buildd.status"
    public static let statusHashExchange = "buildd.status.hash"
    public static let controlExchange = "buildd.control"
    public static let deadLetterExchange = "buildd.dlx"
    public static let deadLetterQueue = "buildd.dead"
    /// Build events for anyone allowed to read them (topic; routing key `PROCESSOR.STATUS`).
    public static let eventsExchange = "buildd.events"
    /// Build events of private archives: only broker users given read on this exchange can bind to it.
    public static let privateEventsExchange = "buildd.events.private"
    /// Number of status shard queues. Changing it re-shards builders: only with every master stopped.
    public static let statusShards = 8
    /// The header agents set to their builder name; the consistent-hash exchange hashes it.
    public static let builderHeader = "builder"

    public static func jobQueue(processor: String) -> String { "buildd.jobs.\(processor)" }
    public static func controlQueue(builder: String) -> String { "buildd.control.\(builder)" }
    public static func statusShardQueue(_ index: Int) -> String { "buildd.status.shard.\(index)" }
    public static func statusRoutingKey(builder: String, event: String) -> String { "\(builder).\(event)" }

    /// Arguments of job queues; agents and masters must declare them identically.
    public static func jobQueueArguments(queueType: String) -> [String: AMQPValue] {
        ["x-queue-type": .string(queueType)]
    }

    /// Declares the exchanges, status shards and dead-letter queue (master side). Idempotent.
    public static func declareMaster(on connection: AMQPConnection, queueType: String = "classic") throws {
        try connection.declareExchange(deadLetterExchange, type: "fanout")
        try declare(deadLetterQueue, arguments: ["x-queue-type": .string(queueType)], queueType: queueType, on: connection)
        try connection.bindQueue(deadLetterQueue, exchange: deadLetterExchange, routingKey: "")
        try connection.declareExchange(jobsExchange, type: "direct")
        try connection.declareExchange(controlExchange, type: "direct")
        try connection.declareExchange(statusExchange, type: "topic")
        try connection.declareExchange(eventsExchange, type: "topic")
        try connection.declareExchange(privateEventsExchange, type: "topic")
        try connection.declareExchange(statusHashExchange, type: "x-consistent-hash", internal: true,
                                       arguments: ["hash-header": .string(builderHeader)])
        try connection.bindExchange(destination: statusHashExchange, source: statusExchange, routingKey: "#")
        for shard in 0..<statusShards {
            let queue = statusShardQueue(shard)
            try declare(queue, arguments: [
                "x-single-active-consumer": .bool(true),
                "x-dead-letter-exchange": .string(deadLetterExchange),
                "x-queue-type": .string(queueType),
            ], queueType: queueType, on: connection)
            try connection.bindQueue(queue, exchange: statusHashExchange, routingKey: "1")
        }
    }

    /// Declares a processor's job queue and binds it. Idempotent. Returns the queue's message and consumer
    /// counts as the declaration found them.
    @discardableResult
    public static func declareJobQueue(processor: String, on connection: AMQPConnection,
                                       queueType: String = "classic") throws -> (messages: Int, consumers: Int) {
        let counts = try declare(jobQueue(processor: processor), arguments: jobQueueArguments(queueType: queueType),
                                 queueType: queueType, on: connection)
        try connection.bindQueue(jobQueue(processor: processor), exchange: jobsExchange, routingKey: processor)
        return counts
    }

    /// Declares a queue of the farm's type; a queue that already exists with another type is refused by the
    /// broker (406), and the error then says which setting to change rather than only what the broker saw.
    @discardableResult
    static func declare(_ name: String, arguments: [String: AMQPValue], queueType: String,
                        on connection: AMQPConnection) throws -> (messages: Int, consumers: Int) {
        do {
            return try connection.declareQueue(name, arguments: arguments)
        } catch let error as AMQPError where error.kind == .server && error.code == 406
                    && error.text.contains("x-queue-type") {
            throw AMQPError(.server, code: 406, text: """
                queue \(name) exists with another x-queue-type than '\(queueType)' (\(error.text)); every master \
                (--queue-type or BUILDD_QUEUE_TYPE), `processor add` and agent ([broker] queue_type) must use the \
                farm's queue type, the one its queues were made with (deploy/rabbitmq/definitions.json: quorum)
                """, context: error.context)
        }
    }

    /// Checks that a queue an agent consumes exists, without declaring it: masters declare and bind every
    /// queue (an agent's control queue once its builder is added), and an agent's broker user may not
    /// configure or bind anything (deploy/rabbitmq/enrol-agent).
    public static func requireQueue(_ name: String, on connection: AMQPConnection) throws {
        do {
            try connection.declareQueue(name, passive: true)
        } catch let error as AMQPError where error.kind == .server && error.code == 404 {
            throw AMQPError(.server, code: 404, text: """
                queue \(name) does not exist yet: masters declare it (an agent's control queue once its builder is \
                added with `buildd-master builder add`, a job queue with `processor add`); retrying
                """, context: error.context)
        }
    }

    /// Declares a builder's control queue and binds it. Idempotent.
    public static func declareControlQueue(builder: String, on connection: AMQPConnection,
                                           queueType: String = "classic") throws {
        try declare(controlQueue(builder: builder), arguments: ["x-queue-type": .string(queueType)],
                    queueType: queueType, on: connection)
        try connection.bindQueue(controlQueue(builder: builder), exchange: controlExchange, routingKey: builder)
    }
}
