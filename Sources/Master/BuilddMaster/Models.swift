import BuilddShared

/// A processor and its queue, as listings show it.
public struct ProcessorSummary: Codable, Sendable, Equatable {
    public var name: String
    public var waiting: Int
    public var dispatched: Int
    public var running: Int
    public var builders: Int
    public var idleBuilders: Int
    /// Builders that may get work (ok, active, not manual).
    public var usableBuilders: Int = 0
    /// How long the oldest waiting build has waited.
    public var oldestWaitSeconds: Double?
    /// Mean duration of its last 50 successful builds.
    public var averageBuildSeconds: Double?
    /// Waiting builds per usable builder, times the mean build duration: about when a build submitted now
    /// would start (nil without usable builders or history).
    public var estimatedWaitSeconds: Double?

    enum CodingKeys: String, CodingKey {
        case name, waiting, dispatched, running, builders
        case idleBuilders = "idle_builders", usableBuilders = "usable_builders"
        case oldestWaitSeconds = "oldest_wait_seconds", averageBuildSeconds = "average_build_seconds"
        case estimatedWaitSeconds = "estimated_wait_seconds"
    }
}

/// A waiting build and its place in its processor's queue.
public struct QueueEntry: Codable, Sendable, Equatable {
    public var position: Int
    public var id: Int64
    public var archSeries: String
    public var source: String
    public var version: String
    public var buildType: String
    public var score: Int
    /// The score was set by an operator.
    public var manual: Bool
    public var waitingSeconds: Double
    /// What it needs of its builder (``Placement``).
    public var requirements: BuildRequirements?
    /// Why no builder takes it, when none that may take it is idle (``Placement/whyWaiting(_:processor:builders:)``).
    public var waitingBecause: String?

    enum CodingKeys: String, CodingKey {
        case position, id, source, version, score, manual, requirements
        case archSeries = "archseries", buildType = "build_type", waitingSeconds = "waiting_seconds"
        case waitingBecause = "waiting_because"
    }
}

/// An API token as listings show it (never the token itself).
public struct APIToken: Codable, Sendable, Equatable {
    public var name: String
    public var role: Role
    public var createdAt: String
    public var createdBy: String?
    public var lastUsed: String?
    public var expiresAt: String?
    /// Whether it has expired (it stays listed until removed, and is refused).
    public var expired: Bool

    enum CodingKeys: String, CodingKey {
        case name, role, expired
        case createdAt = "created_at", createdBy = "created_by", lastUsed = "last_used", expiresAt = "expires_at"
    }
}

/// One line of a builder's history: an operator's change with its actor, or a failure the farm counted.
public struct BuilderEvent: Codable, Sendable, Equatable {
    public var at: String
    /// A ``BuilderEventKind``.
    public var kind: String
    public var actor: String?
    public var reason: String?
}

/// A builder, as listings show it.
public struct BuilderSummary: Codable, Sendable, Equatable {
    public var name: String
    public var kind: String
    public var url: String?
    public var processors: [String]
    public var builderok: Bool
    public var failnotes: String?
    public var manual: Bool
    public var active: Bool
    public var failureCount: Int
    public var agentState: String?
    public var lastSeen: String?
    /// Seconds since the agent was last heard from, when it ever was.
    public var secondsSinceSeen: Double?
    public var currentBuild: Int64?
    /// "source version" of the current build.
    public var currentTitle: String?
    /// The last lines of the current build's log.
    public var logTail: String?
    /// The archive of the current build: a private one's build is shown only to those who may view it.
    public var currentArchive: ArchivePurpose?
    /// What it offers builds (``Placement``).
    public var placement: BuilderPlacement?
    /// `CLEAN`, `DIRTY` or `CLEANING` (``BuilderReset``).
    public var cleanStatus: String?
    /// How the master resets it; not in the JSON (a command or URL may hold a credential), only its method.
    public var reset: ResetPlan? = nil
    /// `none`, `command` or `url`.
    public var resetMethod: String?
    /// The release and capabilities its agent announced in its last `hello` (nil: none yet, an agent from
    /// before releases, or a legacy builder).
    public var agentRelease: String?
    public var agentCapabilities: [String]?

    enum CodingKeys: String, CodingKey {
        case name, kind, url, processors, builderok, failnotes, manual, active, placement
        case agentRelease = "agent_release", agentCapabilities = "agent_capabilities"
        case cleanStatus = "clean_status", resetMethod = "reset_method"
        case failureCount = "failure_count", agentState = "agent_state", lastSeen = "last_seen"
        case secondsSinceSeen = "seconds_since_seen", currentBuild = "current_build"
        case currentTitle = "current_title", logTail = "log_tail", currentArchive = "current_archive"
    }

    /// What the builder is doing and whether it may be given work (the one definition).
    public func availability(silentAfterSeconds: Double) -> BuilderAvailability {
        BuilderAvailability.of(BuilderAvailability.Facts(
            active: active, builderok: builderok, manual: manual, agentState: agentState.flatMap(AgentState.init(rawValue:)),
            secondsSinceSeen: secondsSinceSeen, holdsBuild: currentBuild != nil,
            clean: cleanStatus.flatMap(CleanStatus.init(rawValue:)) ?? .clean), silentAfterSeconds: silentAfterSeconds)
    }

    /// One word for what the builder is doing, as the status page and metrics show it.
    public func state(silentAfterSeconds: Double) -> String {
        availability(silentAfterSeconds: silentAfterSeconds).rawValue
    }
}

/// A build, as listings show it.
public struct BuildSummary: Codable, Sendable, Equatable {
    public var id: Int64
    public var status: BuildStatus
    public var processor: String
    public var archSeries: String
    public var archive: ArchivePurpose
    public var source: String
    public var version: String
    public var buildType: String
    public var builder: String?
    public var attempt: Int
    public var score: Int?
    public var queueState: String?
    public var failureCount: Int
    public var result: String?
    public var failnotes: String?
    public var dateCreated: String
    public var dateStarted: String?
    public var dateFinished: String?

    enum CodingKeys: String, CodingKey {
        case id, status, processor, archive, source, version, builder, attempt, score, result, failnotes
        case archSeries = "archseries", buildType = "build_type", queueState = "queue_state"
        case failureCount = "failure_count", dateCreated = "date_created", dateStarted = "date_started"
        case dateFinished = "date_finished"
    }

    /// Absent values are written as `null`, so every listing has the same keys.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(status, forKey: .status)
        try container.encode(processor, forKey: .processor)
        try container.encode(archSeries, forKey: .archSeries)
        try container.encode(archive, forKey: .archive)
        try container.encode(source, forKey: .source)
        try container.encode(version, forKey: .version)
        try container.encode(buildType, forKey: .buildType)
        try container.encode(builder, forKey: .builder)
        try container.encode(attempt, forKey: .attempt)
        try container.encode(score, forKey: .score)
        try container.encode(queueState, forKey: .queueState)
        try container.encode(failureCount, forKey: .failureCount)
        try container.encode(result, forKey: .result)
        try container.encode(failnotes, forKey: .failnotes)
        try container.encode(dateCreated, forKey: .dateCreated)
        try container.encode(dateStarted, forKey: .dateStarted)
        try container.encode(dateFinished, forKey: .dateFinished)
    }
}

/// A stored result file or log.
public struct BuildFile: Codable, Sendable, Equatable {
    public var name: String
    public var kind: String
    public var sha256: String
    public var size: Int64
    public var attempt: Int
}

/// One entry of a build's status history.
public struct BuildEvent: Codable, Sendable, Equatable {
    public var at: String
    public var status: String
    public var attempt: Int
    public var builder: String?
    public var message: String?
    /// Who asked for the change (a token's name, `cli:USER`); null for the farm's own steps.
    public var actor: String?
}

/// Everything about one build.
public struct BuildDetail: Codable, Sendable, Equatable {
    public var build: BuildSummary
    public var urgency: String
    public var pocket: String
    public var component: String
    public var logtail: String?
    public var logName: String?
    public var files: [BuildFile]
    public var history: [BuildEvent]
    /// What it needs of its builder (``Placement``).
    public var requirements: BuildRequirements?
    /// Why a waiting build has no builder (``Placement/whyWaiting(_:processor:builders:)``); nil when it
    /// is not waiting, or some builder that may take it is idle.
    public var waitingBecause: String?
    /// The archive it is for (`archive add`); nil: its distribution's primary one.
    public var archiveName: String?
    /// What a MANUALDEPWAIT build misses, as its builder said (``DepWait``): the dep-wait pass retries it once
    /// its archives satisfy this.
    public var dependencies: String?

    enum CodingKeys: String, CodingKey {
        case build, urgency, pocket, component, logtail, files, history, requirements, dependencies
        case logName = "log_name", waitingBecause = "waiting_because", archiveName = "archive_name"
    }
}

/// What the broker's topology is made of, as the database says: the processors (a job queue each), the
/// builders with a control queue, and the processors some of whose builders get their jobs addressed to
/// them (``BuilddStore/claimAddressedJobs(processor:leaseSeconds:artifactBaseURL:)``).
public struct BrokerTopologyNames: Sendable, Equatable {
    public var processors: [String] = []
    public var controlQueues: [String] = []
    public var addressed: Set<String> = []

    public init() {}
}

/// A request to build one source on one arch series.
public struct BuildRequest: Sendable {
    public var distribution: String
    public var series: String
    public var archTag: String
    public var sourceName: String
    public var sourceVersion: String
    public var buildType: String
    public var urgency: Urgency
    public var pocket: Pocket
    public var component: Component
    public var archive: ArchivePurpose
    public var sourceFiles: [FileDigest]
    /// Whether it must run on a virtualized builder (a private archive's build always must).
    public var virtualized: Bool = true
    /// Resources its builder must offer (``Placement``).
    public var constraints: Set<String> = []
    /// The archive it is for (`archive add`); nil: its distribution's primary archive, if it has one. A
    /// private archive makes the build private.
    public var archiveName: String?
    /// Build the architecture-independent packages too (Launchpad's `arch_indep`).
    public var archIndep = false

    /// What it needs of its builder, by ``BuildRequirements/submitted(archivePrivate:virtualized:constraints:)``.
    public var requirements: BuildRequirements {
        .submitted(archivePrivate: archive == .private, virtualized: virtualized, constraints: constraints)
    }

    public init(distribution: String, series: String, archTag: String, sourceName: String, sourceVersion: String,
                buildType: String = "binarypackage", urgency: Urgency = .medium, pocket: Pocket = .release,
                component: Component = .main, archive: ArchivePurpose = .primary, sourceFiles: [FileDigest] = []) {
        self.distribution = distribution
        self.series = series
        self.archTag = archTag
        self.sourceName = sourceName
        self.sourceVersion = sourceVersion
        self.buildType = buildType
        self.urgency = urgency
        self.pocket = pocket
        self.component = component
        self.archive = archive
        self.sourceFiles = sourceFiles
    }
}

/// A user-facing error of the store: what was wrong, in words an operator can act on.
public struct StoreError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        case notFound, alreadyExists, invalid, conflict
    }

    public let code: Code
    public let message: String
    public var description: String { message }

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
}
