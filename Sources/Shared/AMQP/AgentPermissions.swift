import BuilddShared

/// What a build machine's broker user may do, as RabbitMQ permissions (regular expressions over resource
/// names): consume its processors' job queues (unless its jobs are addressed to it) and its own control
/// queue, publish to `buildd.status` with routing keys `NAME.*` only, and nothing else - no declare, bind
/// or delete, no other queue. `deploy/rabbitmq/enrol-agent` writes the same for machines an operator
/// enrols by hand; a test compares the two on a real broker.
public struct AgentPermissions: Equatable, Sendable {
    public var configure: String
    public var write: String
    public var read: String
    /// The topic permission on `buildd.status`: the routing keys it may publish with.
    public var topicExchange: String
    public var topicWrite: String
    public var topicRead: String

    /// `addressed`: a builder that is not virtualized or offers resources; it reads only its control queue.
    public init(builder: String, processors: [String], addressed: Bool = false) {
        // Every queue is `buildd.<rest>`: the expression is `^buildd\.(rest|rest)$`, as the script writes it.
        func rest(_ queue: String) -> String { Self.escape(String(queue.dropFirst("buildd.".count))) }
        let queues = processors.map { rest(BrokerTopology.jobQueue(processor: $0)) }
        let own = rest(BrokerTopology.controlQueue(builder: builder))
        configure = "^$"
        write = "^" + Self.escape(BrokerTopology.statusExchange) + "$"
        read = addressed ? "^buildd\\.\(own)$" : "^buildd\\.(\((queues + [own]).joined(separator: "|")))$"
        topicExchange = BrokerTopology.statusExchange
        topicWrite = "^" + Self.escape(builder) + "\\."
        topicRead = "^$"
    }

    /// A name as a regular expression that matches it alone: its dots and pluses escaped (names are
    /// ``Naming/isValidName(_:)``: nothing else in them means anything to a regular expression).
    static func escape(_ name: String) -> String {
        var escaped = ""
        for character in name {
            if character == "." || character == "+" { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }
}
