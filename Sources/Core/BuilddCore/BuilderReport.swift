/// Which protocol a builder speaks.
public enum BuilderKind: String, Sendable, Equatable {
    /// A buildd agent, over the broker.
    case agent
    /// A launchpad-buildd builder, polled over XML-RPC by a master's legacy adapter.
    case xmlrpc
}

/// One event from a builder, typed: each case carries exactly its fields, and the attempt it is about is
/// never optional where the protocol requires it. Agents' messages become reports once the wire decoder
/// checked them; the legacy adapter makes them from what it polled.
public struct BuilderReport: Equatable, Sendable {
    public enum Event: Equatable, Sendable {
        /// The agent is up (or back), in `state`, with the attempt it works on, if any.
        case hello(AgentState, current: AttemptRef?)
        /// Periodic: its state, the attempt it works on and the end of its log.
        case heartbeat(AgentState, current: AttemptRef?, logTail: String?)
        /// It took the job of this attempt, and chose an upload key whose SHA-256 is `uploadKey`
        /// (``AttemptCredential``).
        case accepted(AttemptRef, uploadKey: String)
        /// The attempt ended with `result`; its files and log are in the artifact store already.
        case finished(AttemptRef, BuilderResult, files: [FileDigest], log: FileDigest?)
        /// It ran its `reset_command` for the reset `attempt` the master asked for (``ResetMethod/agent``);
        /// `ok`: it succeeded (the report's message says why not).
        case reset(attempt: Int, ok: Bool)

        /// `hello`, `heartbeat`, `accepted` or `finished`.
        public var name: String {
            switch self {
            case .hello: "hello"
            case .heartbeat: "heartbeat"
            case .accepted: "accepted"
            case .finished: "finished"
            case .reset: "reset"
            }
        }

        /// The attempt the event is about, if any.
        public var attempt: AttemptRef? {
            switch self {
            case .hello(_, let current), .heartbeat(_, let current, _): current
            case .accepted(let ref, _), .finished(let ref, _, _, _): ref
            case .reset: nil
            }
        }
    }

    /// Where the report came from: who may speak for which builders.
    public enum Sender: Equatable, Sendable {
        /// An agent, over the broker: `user` is the AMQP `user_id` the broker validated (nil when none).
        case agent(user: String?)
        /// This master's legacy adapter, for an XML-RPC builder.
        case legacyAdapter
    }

    public var builder: String
    /// Random per agent process; with `seq` it lets a master drop replays.
    public var session: String
    public var seq: Int64
    public var event: Event
    /// Free text from the builder (why it failed).
    public var message: String?
    public var sender: Sender
    /// `hello` only: the release and capabilities the agent announced (nil: an agent of a release that
    /// announced none, or a legacy builder).
    public var announcement: AgentAnnouncement?

    public init(builder: String, session: String, seq: Int64, event: Event, message: String? = nil,
                sender: Sender) {
        self.builder = builder
        self.session = session
        self.seq = seq
        self.event = event
        self.message = message
        self.sender = sender
    }
}

/// What an agent says of itself in `hello`: its release and what it understands beyond the first release's
/// messages. Masters record it per builder, for operators following a rolling upgrade.
public struct AgentAnnouncement: Equatable, Sendable {
    public var release: String
    public var capabilities: [String]

    public init(release: String, capabilities: [String]) {
        self.release = release
        self.capabilities = capabilities
    }
}

/// What applying a report came to.
public enum EventOutcome: Equatable, Sendable {
    /// The event changed state.
    case applied(String)
    /// Stale or repeated: nothing changed (an old attempt, a replayed sequence number).
    case ignored(String)
    /// The agent works on something that is not current: tell it to abort (build, attempt).
    case abort(buildID: Int64, attempt: Int32, reason: String)
    /// The event may not be applied (unknown builder, wrong user): dead-letter it.
    case rejected(String)
}
