/// What a builder is doing and whether it may be given work: the one definition of "idle".
///
/// The status pages, `builder list`, the metrics, the seed's scanner and the dispatcher's window all ask
/// this. The dispatcher's claim counts idle builders in SQL; ``sqlCondition`` states the same rule for
/// it, and a test runs both over one table of cases.
public enum BuilderAvailability: String, Sendable, CaseIterable {
    /// Deactivated by an operator (`builder remove`).
    case removed
    /// Marked broken (`builderok` false).
    case failed
    /// Holds a build (running, or cancelling while the agent has not said ABORTING yet).
    case building
    /// Holds a cancelling build the agent is aborting.
    case aborting
    /// Kept out of automatic dispatch by an operator.
    case manual
    /// Ran a build and waits for its reset to start (``BuilderReset``).
    case dirty
    /// Its reset is under way.
    case cleaning
    /// Not heard from within the silence limit, or never.
    case offline
    /// Usable, holds nothing, said IDLE recently: may be given a job.
    case idle

    /// What is known of a builder when its availability is decided.
    public struct Facts: Equatable, Sendable {
        public var active: Bool
        public var builderok: Bool
        public var manual: Bool
        public var agentState: AgentState?
        /// Seconds since its agent (or its adapter's poll) was last heard from; nil when never.
        public var secondsSinceSeen: Double?
        /// Whether a running or cancelling build is recorded against it.
        public var holdsBuild: Bool
        /// Its clean status: only a CLEAN builder is given work.
        public var clean: CleanStatus

        public init(active: Bool, builderok: Bool, manual: Bool, agentState: AgentState?,
                    secondsSinceSeen: Double?, holdsBuild: Bool, clean: CleanStatus = .clean) {
            self.active = active
            self.builderok = builderok
            self.manual = manual
            self.agentState = agentState
            self.secondsSinceSeen = secondsSinceSeen
            self.holdsBuild = holdsBuild
            self.clean = clean
        }
    }

    /// An agent that has said nothing for this long (seconds) is offline, not idle.
    public static let silenceSeconds = 20

    public static func of(_ facts: Facts, silentAfterSeconds: Double = Double(silenceSeconds)) -> BuilderAvailability {
        if !facts.active { return .removed }
        if !facts.builderok { return .failed }
        if facts.holdsBuild { return facts.agentState == .aborting ? .aborting : .building }
        if facts.manual { return .manual }
        // A builder under reset is CLEANING whether or not its agent answers (a reverted machine reboots).
        if facts.clean == .cleaning { return .cleaning }
        guard let seen = facts.secondsSinceSeen, seen < silentAfterSeconds else { return .offline }
        switch facts.agentState {
        case .building: return .building
        case .aborting: return .aborting
        case nil: return .offline
        case .idle:
            // Idle and DIRTY: it ran a build and waits for its reset to start.
            return facts.clean == .dirty ? .dirty : .idle
        }
    }

    /// Whether a builder in this state may be given a job.
    public var takesWork: Bool { self == .idle }

    /// How the utilisation plot counts a builder in this state.
    public enum Utilisation: String, Sendable, CaseIterable {
        /// Holds a build.
        case busy
        /// Could work and holds nothing: idle, waiting for or under its reset, or kept for manual work.
        case idle
        /// Of no use until someone looks: marked broken, or not heard from.
        case failed
    }

    /// This state's place in the utilisation plot; nil for a removed builder (it is not counted).
    public var utilisation: Utilisation? {
        switch self {
        case .building, .aborting: .busy
        case .idle, .manual, .dirty, .cleaning: .idle
        case .failed, .offline: .failed
        case .removed: nil
        }
    }

    /// The same rule as ``of(_:silentAfterSeconds:)`` for `takesWork`, as a SQL condition on the builder
    /// row `alias` (columns of the `builder` table; running builds in `buildqueue`), with the silence limit
    /// in seconds in the parameter `silence` and the time as `now`.
    public static func sqlCondition(alias b: String = "b", silence: String = "$1", now: String = "now()") -> String {
        """
        \(b).active AND \(b).builderok AND NOT EXISTS (SELECT 1 FROM buildqueue r WHERE r.builder_id = \(b).id \
        AND \(QueueRecord.State.sqlHolds("r.state"))) AND NOT \(b).manual \
        AND \(b).last_seen > \(now) - make_interval(secs => \(silence)) AND \(b).agent_state = 'IDLE' \
        AND \(b).clean_status = '\(CleanStatus.clean.rawValue)'
        """
    }
}
