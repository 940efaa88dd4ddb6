/// The rows a batch of builder reports (or a pass of the clock) may change, as values: a builder, a
/// build and its queue entry. The store reads every row a batch touches in one round trip, the core
/// decides every transition over them in memory, and the store writes each kind of change back for the
/// whole batch at once.
public struct BuilderRecord: Equatable, Sendable {
    public let id: Int
    public let name: String
    public let kind: BuilderKind
    /// The broker user that may speak for it; nil: not checked.
    public let brokerUser: String?
    public let active: Bool
    public let manual: Bool
    public var session: String?
    public var lastSeq: Int64
    public var agentState: AgentState?
    public var cleanStatus: CleanStatus
    public var standing: BuilderStanding
    /// What it offers builds (``Placement``).
    public var placement: BuilderPlacement = .plain
    /// How it is reset after a build (``BuilderReset``).
    public var reset: ResetPlan = .none
    /// When its reset under way must have ended (epoch seconds), while CLEANING.
    public var resetDeadline: Double?
    /// Bumped by each reset started: the fencing token of a reset's run.
    public var resetAttempt: Int = 0
    /// Heard from in this batch: its `last_seen` becomes the batch's time.
    public var seen = false
    /// Announced in a `hello` of this batch: its agent's release and capabilities (nil: unchanged).
    public var announced: AgentAnnouncement?

    public init(id: Int, name: String, kind: BuilderKind, brokerUser: String?, active: Bool, manual: Bool,
                session: String?, lastSeq: Int64, agentState: AgentState?, cleanStatus: CleanStatus,
                standing: BuilderStanding) {
        self.id = id
        self.name = name
        self.kind = kind
        self.brokerUser = brokerUser
        self.active = active
        self.manual = manual
        self.session = session
        self.lastSeq = lastSeq
        self.agentState = agentState
        self.cleanStatus = cleanStatus
        self.standing = standing
    }

    /// Whether it is in service: ok and not removed (a builder in manual mode is, for its resets and history).
    public var usable: Bool { standing.ok && active }

    /// Whether a build may start on it: usable and not in manual mode. A builder in manual mode is sent no job
    /// (``BuilderAvailability``), and an accept it sends anyway (a job it took from the shared queue before it
    /// was put in manual mode, or one it was never sent) is refused.
    public var mayStartBuilds: Bool { usable && !manual }

    func resetFacts(holdsBuild: Bool) -> ResetFacts {
        ResetFacts(clean: cleanStatus, plan: reset, virtualized: placement.virtualized, usable: usable, manual: manual,
                   holdsBuild: holdsBuild, deadline: resetDeadline)
    }
}

/// A build's entry in the queue (it has one while it needs or holds a builder).
public struct QueueRecord: Equatable, Sendable {
    public enum State: String, Sendable, CaseIterable {
        case waiting = "WAITING", dispatched = "DISPATCHED", running = "RUNNING", cancelling = "CANCELLING"

        /// Whether an entry in this state holds its builder (accepted, and not yet ended): the one definition
        /// of "holds a build", which ``sqlHolds(_:)`` states for queries.
        public var holdsBuilder: Bool { self == .running || self == .cancelling }

        /// ``holdsBuilder`` as SQL over a `state` column, generated from it.
        public static func sqlHolds(_ column: String) -> String {
            "\(column) IN (" + allCases.filter(\.holdsBuilder).map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"
        }
    }

    /// A column the core either leaves, sets to the batch's time, or empties.
    public enum Stamp: String, Equatable, Sendable {
        case keep, now, clear
    }

    /// Where the entry is in the dispatch contract, with exactly the facts that phase has: the one
    /// representation of a queued build's state, from which its ``BuildLifecycle`` is made (with the build's
    /// attempt) and to which the core writes back what the lifecycle decided.
    public enum Phase: Equatable, Sendable {
        /// Needs a builder.
        case waiting
        /// Claimed at `since` (epoch seconds), its job sent to the shared queue (`to` nil) or to one builder.
        case dispatched(since: Double, to: Int?)
        /// Accepted by `builder`; its lease runs until `leaseUntil`.
        case running(builder: Int, leaseUntil: Double)
        /// Asked to abort; `builder` has until `deadline` to confirm.
        case cancelling(builder: Int, deadline: Double)

        /// The phase stored columns describe, or nil when they do not describe one (a running entry with no
        /// builder or lease, a dispatched one with no claim time): the store refuses such a row.
        public static func stored(state: State, builder: Int?, dispatchedAt: Double?, leaseUntil: Double?) -> Phase? {
            switch state {
            case .waiting: return .waiting
            case .dispatched: return dispatchedAt.map { .dispatched(since: $0, to: builder) }
            case .running:
                guard let builder, let leaseUntil else { return nil }
                return .running(builder: builder, leaseUntil: leaseUntil)
            case .cancelling:
                guard let builder, let leaseUntil else { return nil }
                return .cancelling(builder: builder, deadline: leaseUntil)
            }
        }
    }

    public var phase: Phase

    /// The phase's name, as the `state` column holds it.
    public var state: State {
        switch phase {
        case .waiting: .waiting
        case .dispatched: .dispatched
        case .running: .running
        case .cancelling: .cancelling
        }
    }

    /// The builder it is sent to (dispatched) or held by (running, cancelling).
    public var builderID: Int? {
        switch phase {
        case .waiting: nil
        case .dispatched(_, let to): to
        case .running(let builder, _), .cancelling(let builder, _): builder
        }
    }

    /// When it was claimed (epoch seconds), while dispatched.
    public var dispatchedAt: Double? {
        if case .dispatched(let since, _) = phase { return since }
        return nil
    }

    /// When the lease (running) or the abort deadline (cancelling) runs out, epoch seconds.
    public var leaseUntil: Double? {
        switch phase {
        case .running(_, let until), .cancelling(_, let until): until
        case .waiting, .dispatched: nil
        }
    }

    /// Whether it holds `builder` now (running or cancelling on it).
    public func isHeld(by builder: Int) -> Bool {
        switch phase {
        case .running(let holder, _), .cancelling(let holder, _): holder == builder
        case .waiting, .dispatched: false
        }
    }
    /// The new log tail: nil keeps what is stored; `.some(nil)` empties it.
    public var logTail: String??
    /// The SHA-256 of the upload key its builder declared when its accept stood (``AttemptCredential``);
    /// nil keeps what is stored.
    public var uploadKey: String?
    /// The upload key's digest and the dispatch time go when it is queued again.
    public var dispatchCleared = false
    /// When its builder was last told to abort (epoch seconds), while cancelling.
    public var abortSentAt: Double?
    /// `.now` when it is told to abort in this batch; `.clear` when the deadline is set again.
    public var abortSent: Stamp = .keep
    /// Its score, as its row says (nil only where a test leaves it out).
    public var score: QueueScore?

    public init(_ phase: Phase) {
        self.phase = phase
    }
}

/// A queue entry's score: the computed base, the one in effect, whether an operator set it, and since when
/// the build waits (epoch seconds), for its age bonus (``Scoring/ageScore(waited:)``).
public struct QueueScore: Equatable, Sendable {
    public var base: Int
    public var last: Int
    public var manual: Bool
    public let queuedAt: Double

    public init(base: Int, last: Int, manual: Bool, queuedAt: Double) {
        self.base = base
        self.last = last
        self.manual = manual
        self.queuedAt = queuedAt
    }
}

/// What a build's score is made of (``Scoring``), with its processor: what a retry queues it with.
public struct BuildScoring: Equatable, Sendable {
    public let processor: Int
    public let urgency: Urgency
    public let pocket: Pocket
    public let component: Component
    public let archive: ArchivePurpose

    public init(processor: Int, urgency: Urgency, pocket: Pocket, component: Component, archive: ArchivePurpose) {
        self.processor = processor
        self.urgency = urgency
        self.pocket = pocket
        self.component = component
        self.archive = archive
    }

    /// The score of the build when it enters the queue.
    public var score: Int { Scoring.score(urgency: urgency, pocket: pocket, component: component, archive: archive) }
}

public struct BuildRecord: Equatable, Sendable {
    public let id: Int64
    public var attempt: Int32
    public var status: BuildStatus
    public var builderID: Int?
    public var job: JobStanding
    /// What it needs of its builder (``Placement``).
    public var requirements: BuildRequirements = .plain
    /// What its score is made of (nil only where a test leaves it out: such a build cannot be retried).
    public var scoring: BuildScoring?
    public var result: BuilderResult?
    /// The relation its builder said is missing, set when it ends MANUALDEPWAIT (``DepWait``).
    public var dependencies: String?
    public var logName: String?
    public var logSHA256: String?
    /// When it started on its builder (epoch seconds), for the build-duration metric.
    public var startedAt: Double?
    public var started: QueueRecord.Stamp = .keep
    /// `.now` when it ended in this batch; `.clear` when it was queued again (a retry).
    public var finished: QueueRecord.Stamp = .keep
    /// Set when it enters the queue in this batch (a retry): the entry to insert, with its score.
    public var enqueued: Enqueued?

    /// A new queue entry: the build's processor and its score.
    public struct Enqueued: Equatable, Sendable {
        public let processor: Int
        public let score: Int

        public init(processor: Int, score: Int) {
            self.processor = processor
            self.score = score
        }
    }
    /// Its queue entry; nil once it left the queue.
    public var queue: QueueRecord?

    public init(id: Int64, attempt: Int32, status: BuildStatus, builderID: Int?, job: JobStanding,
                result: BuilderResult?, logName: String?, logSHA256: String?, startedAt: Double?,
                queue: QueueRecord?) {
        self.id = id
        self.attempt = attempt
        self.status = status
        self.builderID = builderID
        self.job = job
        self.result = result
        self.logName = logName
        self.logSHA256 = logSHA256
        self.startedAt = startedAt
        self.queue = queue
    }

    /// The builder the build's current attempt is (or was last) on.
    public var holder: Int? { queue?.builderID ?? builderID }

    /// Whether it holds `builder` now (running or cancelling on it).
    func isHeld(by builder: Int) -> Bool {
        queue?.isHeld(by: builder) ?? false
    }

    /// Its lifecycle: its queue entry's phase with its attempt (out of the queue: done).
    public var lifecycle: BuildLifecycle {
        let state: BuildLifecycle.State
        switch queue?.phase {
        case .waiting: state = .waiting
        case .dispatched(let since, _): state = .dispatched(attempt: attempt, since: since)
        case .running(let builder, let leaseUntil): state = .running(attempt: attempt, builder: builder, leaseUntil: leaseUntil)
        case .cancelling(let builder, let deadline): state = .cancelling(attempt: attempt, builder: builder, deadline: deadline)
        case nil: state = .done
        }
        return BuildLifecycle(state: state)
    }
}

/// One line of a build's history.
public struct HistoryEntry: Equatable, Sendable {
    public let build: Int64
    public let status: BuildStatus
    public let attempt: Int32
    public let builder: String?
    public let message: String?
    /// Who asked for the change: a token's name or `cli:USER`; nil for the farm's own steps.
    public internal(set) var actor: String?

    public init(build: Int64, status: BuildStatus, attempt: Int32, builder: String?, message: String?,
                actor: String? = nil) {
        self.build = build
        self.status = status
        self.attempt = attempt
        self.builder = builder
        self.message = message
        self.actor = actor
    }
}

/// Decides every transition of builds and builders over rows in memory.
///
/// Feed it the rows a batch touches and the time (the database's clock: every master judges time by
/// it), then the batch's reports in order (or a pass of the clock); read back the changed rows, the
/// history lines to add and an outcome per report. It does no I/O; tests drive it with a manual clock.
public struct LifecycleCore: Sendable {
    public private(set) var builders: [Int: BuilderRecord]
    public private(set) var builds: [Int64: BuildRecord]
    public let now: Double
    public let leaseSeconds: Double
    /// Stored result files: (name -> digest) by attempt.
    let storedFiles: [AttemptRef: [String: FileDigest]]
    private let builderIDs: [String: Int]
    private let originalBuilders: [Int: BuilderRecord]
    private let originalBuilds: [Int64: BuildRecord]

    /// History lines to insert, in order.
    public private(set) var history: [HistoryEntry] = []
    /// Lines of builders' histories about their resets (started, CLEAN), in order.
    public private(set) var resetHistory: [BuilderHistoryEntry] = []
    /// Seconds from claim to accepted, per build started.
    public private(set) var dispatchLatencies: [Double] = []
    /// Seconds from start to end, per build ended, by its final status.
    public private(set) var buildDurations: [(status: BuildStatus, seconds: Double)] = []

    public init(builders: [BuilderRecord], builds: [BuildRecord], storedFiles: [AttemptRef: [FileDigest]] = [:],
                now: Double, leaseSeconds: Double) {
        self.builders = Dictionary(builders.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        self.builds = Dictionary(builds.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        builderIDs = Dictionary(builders.map { ($0.name, $0.id) }, uniquingKeysWith: { first, _ in first })
        self.storedFiles = storedFiles.mapValues { Dictionary($0.map { ($0.name, $0) }, uniquingKeysWith: { $1 }) }
        originalBuilders = self.builders
        originalBuilds = self.builds
        self.now = now
        self.leaseSeconds = leaseSeconds
    }

    /// The builders whose rows changed, by id.
    public var changedBuilders: [BuilderRecord] {
        builders.values.filter { originalBuilders[$0.id] != $0 }.sorted { $0.id < $1.id }
    }

    /// The lines of builders' histories the batch adds: failures counted against them, and being marked not ok.
    public var builderHistory: [BuilderHistoryEntry] {
        resetHistory + changedBuilders.flatMap { builder in
            originalBuilders[builder.id].map {
                BuilderHistoryEntry.farmChange(of: builder.name, from: $0.standing, to: builder.standing)
            } ?? []
        }
    }

    /// The builders whose reset deadline or attempt changed (a reset started, ended or expired).
    public var changedResets: [BuilderRecord] {
        changedBuilders.filter {
            originalBuilders[$0.id]?.resetDeadline != $0.resetDeadline || originalBuilders[$0.id]?.resetAttempt != $0.resetAttempt
        }
    }

    /// The builds whose rows changed, by id.
    public var changedBuilds: [BuildRecord] {
        builds.values.filter { originalBuilds[$0.id] != $0 }.sorted { $0.id < $1.id }
    }

    /// The builds whose own row changed, leaving their queue entries aside (a heartbeat renews a lease
    /// and changes no build row).
    public var changedBuildRows: [BuildRecord] {
        changedBuilds.filter { build in
            var mine = build
            mine.queue = nil
            var before = originalBuilds[build.id]
            before?.queue = nil
            return mine != before
        }
    }

    /// Each step of the batch that the transition graph does not allow (``BuildStatus/canTransition(to:)``),
    /// in order: the store writes nothing of a batch that has one. Every change of a build's status is one
    /// step (``move(_:to:)``), so a batch that accepts a build and sees it end is checked step by step.
    public private(set) var forbiddenTransitions: [(build: Int64, from: BuildStatus, to: BuildStatus)] = []

    /// Moves a build to `status`, noting the step when the graph does not allow it.
    private mutating func move(_ build: inout BuildRecord, to status: BuildStatus) {
        if build.status != status, !build.status.canTransition(to: status) {
            forbiddenTransitions.append((build.id, build.status, status))
        }
        build.status = status
    }

    /// The builds that left the queue in this batch (their queue rows are to be deleted).
    public var dequeued: [Int64] {
        builds.values.filter { $0.queue == nil && originalBuilds[$0.id]?.queue != nil }.map(\.id).sorted()
    }

    // MARK: Reports

    /// Applies one report, as the next of its builder's.
    public mutating func apply(_ report: BuilderReport) -> EventOutcome {
        guard let builderID = builderIDs[report.builder], var builder = builders[builderID] else {
            return .rejected("unknown builder \(report.builder)")
        }
        switch report.sender {
        case .agent(let user):
            if let owner = builder.brokerUser, owner != user {
                return .rejected("user \(user ?? "(none)") may not speak for builder \(report.builder)")
            }
            // Agents speak for agent builders only; the legacy adapter for XML-RPC builders only.
            guard builder.kind == .agent else { return .rejected("builder \(report.builder) is not an agent") }
        case .legacyAdapter:
            guard builder.kind == .xmlrpc else {
                return .rejected("builder \(report.builder) is not an XML-RPC builder")
            }
        }
        if builder.session == report.session, report.seq <= builder.lastSeq {
            return .ignored("replayed event \(report.seq) of session \(report.session)")
        }
        builder.session = report.session
        builder.lastSeq = report.seq
        builder.seen = true
        switch report.event {
        case .hello(let state, _), .heartbeat(let state, _, _):
            builder.agentState = state
            if case .hello = report.event, let announcement = report.announcement { builder.announced = announcement }
            if state == .idle { builder.cleanStatus = BuilderReset.whenIdle(builder.resetFacts(holdsBuild: false)) }
        case .finished:
            // A finished build leaves the builder idle (its work folder is gone), whatever became of the
            // build: CLEAN, or DIRTY until its reset when the master resets it.
            builder.agentState = .idle
            builder.cleanStatus = BuilderReset.whenIdle(builder.resetFacts(holdsBuild: false))
        case .accepted, .reset: break  // set below only when the accept holds; a reset decides below
        }
        builders[builderID] = builder

        switch report.event {
        case .hello(let state, let current):
            return heartbeat(state: state, current: current, logTail: nil, name: "hello", builder: builder,
                             message: report.message)
        case .heartbeat(let state, let current, let tail):
            return heartbeat(state: state, current: current, logTail: tail, name: "heartbeat", builder: builder,
                             message: report.message)
        case .accepted(let ref, let key):
            return accepted(ref, uploadKey: key, builder: builder)
        case .finished(let ref, let result, let files, let log):
            return finished(ref, result: result, files: files, log: log, builder: builder, message: report.message)
        case .reset(let attempt, let ok):
            guard BuilderReset.builderMayReport(builder.reset) else {
                return .rejected("builder \(builder.name) is not reset by its agent; its report of a reset is refused")
            }
            return resetRan(builder: builder.name, attempt: attempt,
                            result: ok ? .succeeded : .failed(report.message ?? "the agent's reset_command failed"))
        }
    }

    private mutating func heartbeat(state: AgentState, current: AttemptRef?, logTail: String?, name: String,
                                    builder: BuilderRecord, message: String?) -> EventOutcome {
        if let ref = current, state != .idle {
            guard var build = builds[ref.build] else {
                return .abort(buildID: ref.build, attempt: ref.attempt, reason: "no build \(ref.build)")
            }
            var machine = build.lifecycle
            let ended = build.holder.map { (build.attempt, $0) }
            switch machine.heartbeat(attempt: ref.attempt, builder: builder.id, now: now, lease: leaseSeconds,
                                     endedAttempt: ended) {
            case .renew:
                persistLease(machine, &build)
                if let logTail { build.queue?.logTail = .some(logTail) }
                builds[ref.build] = build
                return .applied("lease renewed")
            case let other:
                return Self.unchanged(other, buildID: ref.build)
            }
        }
        // The agent is idle: a build the database still gives it was lost (the agent restarted or forgot it).
        let held = builds.values.filter { $0.isHeld(by: builder.id) }.map(\.id).sorted()
        for buildID in held {
            var machine = builds[buildID]!.lifecycle
            carryOut(machine.builderIdle(builder: builder.id), &machine, buildID: buildID, builder: builder.name,
                     finishMessage: message)
        }
        return held.isEmpty ? .applied("\(name) \(state.rawValue)") : .applied("requeued \(held.count) lost build(s)")
    }

    private mutating func accepted(_ ref: AttemptRef, uploadKey: String, builder: BuilderRecord) -> EventOutcome {
        guard var build = builds[ref.build] else {
            return .abort(buildID: ref.build, attempt: ref.attempt, reason: "no build \(ref.build)")
        }
        let busy = builds.values.contains { $0.id != ref.build && $0.isHeld(by: builder.id) }
        var machine = build.lifecycle
        let claimedAt: Double? = if case .dispatched(_, let since) = machine.state { since } else { nil }
        switch machine.accepted(attempt: ref.attempt, builder: builder.id, builderUsable: builder.mayStartBuilds,
                                builderBusy: busy, refusal: Self.refusal(of: builder, for: build, busy: busy), now: now,
                                lease: leaseSeconds) {
        case .start:
            if let claimedAt { dispatchLatencies.append(now - claimedAt) }
            persistLease(machine, &build)
            // The attempt's sources and uploads are this builder's alone from now on.
            build.queue?.uploadKey = uploadKey
            move(&build, to: .building)
            build.builderID = builder.id
            build.started = .now
            build.startedAt = now
            builds[ref.build] = build
            builders[builder.id]?.agentState = .building
            builders[builder.id]?.cleanStatus = BuilderReset.whenBuildStarts
            history.append(HistoryEntry(build: ref.build, status: .building, attempt: ref.attempt,
                                        builder: builder.name, message: nil))
            return .applied("build \(ref.build) attempt \(ref.attempt) started on \(builder.name)")
        case let other:
            return Self.unchanged(other, buildID: ref.build)
        }
    }

    /// Why `builder` may not take `build` whatever route its job took: the job was addressed to another
    /// builder (a dispatched entry's builder is the one it was sent to), or the placement rule refuses it.
    /// A builder that is not CLEAN refuses too, unless it is busy (the machine says so then: a build that
    /// runs is what made it DIRTY).
    static func refusal(of builder: BuilderRecord, for build: BuildRecord, busy: Bool) -> String? {
        if case .dispatched(_, let addressee?)? = build.queue?.phase, addressee != builder.id {
            return "the job was sent to another builder"
        }
        if !busy, let unclean = BuilderReset.refusal(builder.cleanStatus) { return unclean }
        return Placement.refusal(of: builder.placement, for: build.requirements).map { "\($0)" }
    }

    private mutating func finished(_ ref: AttemptRef, result: BuilderResult, files: [FileDigest], log: FileDigest?,
                                   builder: BuilderRecord, message: String?) -> EventOutcome {
        guard var build = builds[ref.build] else { return .ignored("no build \(ref.build)") }
        // Every file the agent names must be in the artifact store for this attempt, with the same digest.
        let stored = storedFiles[ref] ?? [:]
        let missing = (files + (log.map { [$0] } ?? [])).filter { file in
            guard let kept = stored[file.name] else { return true }
            return kept.sha256 != file.sha256 || kept.size != file.size
        }.map(\.name)
        var machine = build.lifecycle
        let action = machine.finished(attempt: ref.attempt, builder: builder.id, result: result, filesMissing: missing)
        if case .ignore(let why) = action { return .ignored("build \(ref.build): \(why)") }
        if let log, !missing.contains(log.name) {
            build.logName = log.name
            build.logSHA256 = log.sha256
        }
        // A finished build gets its result with its final status; a failure keeps it here.
        if case .finish = action {} else { build.result = result }
        builds[ref.build] = build
        if case .finish(.fullyBuilt, _) = action {
            history.append(HistoryEntry(build: ref.build, status: .gathering, attempt: ref.attempt, builder: builder.name,
                                        message: "\(files.count) file(s) verified"))
        }
        carryOut(action, &machine, buildID: ref.build, builder: builder.name, finishMessage: message ?? result.rawValue,
                 result: result)
        switch action {
        case .finish(let status, _): return .applied("build \(ref.build) \(status.rawValue)")
        default: return .applied("build \(ref.build) \(result.rawValue), counted")
        }
    }

    // MARK: The clock

    /// Running builds whose lease ran out (their agent went silent) are failures: counted and requeued.
    /// Cancelling builds whose agent never confirmed end CANCELLED and count against the builder. Returns
    /// (build, attempt, builder name) of each build the clock changed, in build order.
    public mutating func expireLeases() -> [(buildID: Int64, attempt: Int32, builder: String)] {
        var expired: [(Int64, Int32, String)] = []
        for buildID in builds.keys.sorted() {
            guard let build = builds[buildID] else { continue }
            var machine = build.lifecycle
            let action = machine.tick(now: now, acceptTimeout: .infinity)
            if case .ignore = action { continue }
            if case .reclaim = action { continue }  // claims are expired by the claim window's own statement
            let builder = build.holder.flatMap { builders[$0]?.name } ?? "unknown"
            let message: String? = if case .finish = action { "builder did not confirm the abort" } else { nil }
            carryOut(action, &machine, buildID: buildID, builder: builder, finishMessage: message)
            expired.append((buildID, build.attempt, builder))
        }
        return expired
    }

    /// The claim of `attempt` on `buildID` is given up before its job went out: it waits again (the attempt
    /// stays used). Returns whether it was released.
    public mutating func releaseClaim(_ buildID: Int64, attempt: Int32) -> Bool {
        guard let build = builds[buildID] else { return false }
        var machine = build.lifecycle
        guard machine.release(attempt: attempt) == .reclaim else { return false }
        reclaim(buildID)
        return true
    }

    /// Claims not accepted within `acceptTimeout` seconds go back to waiting, to be claimed again with a new
    /// attempt (a master that died between commit and publish, a lost message, an agent that died holding the
    /// job). Returns the builds reclaimed, in order.
    public mutating func reclaimExpiredClaims(acceptTimeout: Double) -> [Int64] {
        var reclaimed: [Int64] = []
        for buildID in builds.keys.sorted() {
            var machine = builds[buildID]!.lifecycle
            guard case .dispatched = machine.state, machine.tick(now: now, acceptTimeout: acceptTimeout) == .reclaim else {
                continue
            }
            reclaim(buildID)
            reclaimed.append(buildID)
        }
        return reclaimed
    }

    /// A dispatched entry back to waiting: no builder, no claim time, no upload key.
    private mutating func reclaim(_ buildID: Int64) {
        builds[buildID]?.queue?.phase = .waiting
        builds[buildID]?.queue?.dispatchCleared = true
    }

    /// The cancelling builds whose builder is to be told (again) to abort now (``BuildLifecycle/abortDue(now:lastSent:)``),
    /// each marked as told: (build, attempt, builder name), in build order.
    public mutating func abortsDue() -> [(buildID: Int64, attempt: Int32, builder: String)] {
        var due: [(Int64, Int32, String)] = []
        for buildID in builds.keys.sorted() {
            guard var build = builds[buildID], let queue = build.queue,
                  build.lifecycle.abortDue(now: now, lastSent: queue.abortSentAt),
                  let holder = queue.builderID, let name = builders[holder]?.name else { continue }
            build.queue?.abortSentAt = now
            build.queue?.abortSent = .now
            builds[buildID] = build
            due.append((buildID, build.attempt, name))
        }
        return due
    }

    // MARK: Legacy builders

    /// What the legacy adapter's last polls saw its builders say (IDLE, BUILDING, ABORTING): each XML-RPC
    /// builder's state, and that it was heard from, as an agent's heartbeat notes them, so the dispatch window
    /// and the pages count legacy builders like agents. A build the database gives it is judged by its
    /// follower's own reports (``LegacyPolicy``), not here. Returns the builders noted (never an agent).
    public mutating func observedLegacy(_ states: [(builder: Int, state: AgentState)]) -> [Int] {
        var noted: [Int] = []
        for (id, state) in states {
            guard var builder = builders[id], builder.kind == .xmlrpc else { continue }
            builder.agentState = state
            builder.seen = true
            builders[id] = builder
            noted.append(id)
        }
        return noted
    }

    // MARK: Resets

    /// A reset the master is to run now (``BuilderReset``): the builder, the plan and the attempt that
    /// fences its outcome.
    public struct ResetOrder: Equatable, Sendable {
        public let builder: String
        public let plan: ResetPlan
        public let attempt: Int
        public let deadline: Double

        public init(builder: String, plan: ResetPlan, attempt: Int, deadline: Double) {
            self.builder = builder
            self.plan = plan
            self.attempt = attempt
            self.deadline = deadline
        }
    }

    /// The pass over the builders loaded that are not CLEAN: starts the resets that are due (CLEANING until
    /// their deadline) and counts a failure against each builder whose reset ran past its deadline (DIRTY
    /// again). Returns the resets to run, in builder order.
    public mutating func resetPass() -> [ResetOrder] {
        var orders: [ResetOrder] = []
        for id in builders.keys.sorted() {
            guard var builder = builders[id], builder.cleanStatus != .clean else { continue }
            let holds = builds.values.contains { $0.isHeld(by: id) }
            switch BuilderReset.pass(builder.resetFacts(holdsBuild: holds), now: now) {
            case .nothing:
                continue
            case .start(let deadline):
                builder.cleanStatus = .cleaning
                builder.resetDeadline = deadline
                builder.resetAttempt += 1
                orders.append(ResetOrder(builder: builder.name, plan: builder.reset, attempt: builder.resetAttempt,
                                         deadline: deadline))
                resetHistory.append(BuilderHistoryEntry(builder: builder.name, kind: .reset, actor: nil,
                                                        reason: "started: \(builder.reset.description)"))
            case .expired(let reason):
                resetFailed(&builder, reason: reason)
            }
            builders[id] = builder
        }
        return orders
    }

    /// What a reset's run came to, for `builder` and the reset `attempt` it ran; ignored unless that reset is
    /// still the builder's current one and under way (a pass may have judged it past its deadline).
    public mutating func resetRan(builder name: String, attempt: Int, result: BuilderReset.RunResult) -> EventOutcome {
        guard let id = builderIDs[name], var builder = builders[id] else { return .rejected("unknown builder \(name)") }
        guard builder.cleanStatus == .cleaning, builder.resetAttempt == attempt else {
            return .ignored("reset \(attempt) of \(name) is no longer under way")
        }
        switch BuilderReset.afterRun(result, plan: builder.reset) {
        case .clean:
            builder.cleanStatus = .clean
            builder.resetDeadline = nil
            resetHistory.append(BuilderHistoryEntry(builder: name, kind: .reset, actor: nil, reason: "CLEAN"))
        case .awaitCompletion:
            builders[id] = builder
            return .applied("reset of \(name) started; it stays CLEANING until it is said to be done")
        case .failed(let reason):
            resetFailed(&builder, reason: reason)
        }
        builders[id] = builder
        return .applied("reset of \(name): \(builder.cleanStatus.rawValue)")
    }

    /// Whoever reset `name` says it is done (the asynchronous protocol's end, or an operator who reset it
    /// by hand): CLEAN.
    public mutating func resetCompleted(builder name: String, by actor: String?) -> EventOutcome {
        guard let id = builderIDs[name], var builder = builders[id] else { return .rejected("unknown builder \(name)") }
        guard let clean = BuilderReset.completed(builder.cleanStatus) else { return .ignored("\(name) is already CLEAN") }
        let was = builder.cleanStatus
        builder.cleanStatus = clean
        builder.resetDeadline = nil
        builders[id] = builder
        resetHistory.append(BuilderHistoryEntry(builder: name, kind: .reset, actor: actor,
                                                reason: "CLEAN (was \(was.rawValue))"))
        return .applied("\(name) is CLEAN")
    }

    /// Whether the batch holds a builder named `name`.
    public func knows(builder name: String) -> Bool { builderIDs[name] != nil }

    /// An operator asks for `name` to be reset now (``BuilderReset/requested(_:)``): DIRTY, so the next pass
    /// starts its reset, with a line in its history naming the operator. Refused (`.rejected`) when it cannot
    /// be reset; `.ignored` when nothing had to change.
    public mutating func requestReset(builder name: String, by actor: String?) -> EventOutcome {
        guard let id = builderIDs[name], var builder = builders[id] else { return .rejected("unknown builder \(name)") }
        let holds = builds.values.contains { $0.isHeld(by: id) }
        switch BuilderReset.requested(builder.resetFacts(holdsBuild: holds)) {
        case .refused(let why):
            return .rejected(why)
        case .already(let why):
            return .ignored(why)
        case .markDirty:
            builder.cleanStatus = .dirty
            builder.resetDeadline = nil
            builders[id] = builder
            resetHistory.append(BuilderHistoryEntry(builder: name, kind: .reset, actor: actor,
                                                    reason: "requested: DIRTY until its reset ends"))
            return .applied("\(name) is DIRTY: its reset starts with the next pass")
        }
    }

    private mutating func resetFailed(_ builder: inout BuilderRecord, reason: String) {
        _ = builder.standing.countFailure(reason)
        builder.cleanStatus = .dirty
        builder.resetDeadline = nil
    }

    // MARK: Operators

    /// What cancelling a build came to.
    public enum CancelOutcome: Equatable, Sendable {
        /// It had not started: it is CANCELLED now.
        case cancelled
        /// It runs: it is CANCELLING and its builder is to be told to abort.
        case cancelling
        /// It is in a status that cannot be cancelled.
        case notCancellable(BuildStatus)
        case notFound
    }

    /// An operator cancels a build: at once when it has not started, else by asking its builder, who has
    /// `deadlineSeconds` to confirm.
    public mutating func cancel(_ buildID: Int64, deadlineSeconds: Double, by actor: String? = nil) -> CancelOutcome {
        attributed(to: actor) { $0.applyCancel(buildID, deadlineSeconds: deadlineSeconds) }
    }

    /// Runs an operator's change and records `actor` on every history line it adds.
    private mutating func attributed<T>(to actor: String?, _ change: (inout LifecycleCore) -> T) -> T {
        let first = history.count
        let outcome = change(&self)
        for index in first..<history.count { history[index].actor = actor }
        return outcome
    }

    private mutating func applyCancel(_ buildID: Int64, deadlineSeconds: Double) -> CancelOutcome {
        guard var build = builds[buildID] else { return .notFound }
        var machine = build.lifecycle
        switch machine.cancel(now: now, deadline: deadlineSeconds) {
        case .finish:
            finish(buildID, status: .cancelled, builder: nil, result: nil, message: "cancelled before it started")
            return .cancelled
        case .requestAbort:
            persistLease(machine, &build)
            move(&build, to: .cancelling)
            builds[buildID] = build
            history.append(HistoryEntry(build: buildID, status: .cancelling, attempt: build.attempt,
                                        builder: build.holder.flatMap { builders[$0]?.name }, message: "cancel requested"))
            return .cancelling
        default:
            if case .cancelling = machine.state { return .cancelling }
            return .notCancellable(build.status)
        }
    }

    /// What retrying a build came to.
    public enum RetryOutcome: Equatable, Sendable {
        /// It waits again, with `score`.
        case queued
        /// Only failed or cancelled builds may be retried (``BuildStatus/isRetryable``).
        case notRetryable(BuildStatus)
        /// What its score is made of was not loaded (``BuildRecord/scoring``).
        case unscored
        case notFound
    }

    /// An operator retries a failed or cancelled build: it waits again on its processor with the score its
    /// urgency, pocket, component and archive give (``BuildScoring``), its failure count, result and notes
    /// cleared (its attempts go on: the next claim is a new attempt).
    public mutating func retry(_ buildID: Int64, by actor: String? = nil) -> RetryOutcome {
        attributed(to: actor) { $0.applyRetry(buildID) }
    }

    private mutating func applyRetry(_ buildID: Int64) -> RetryOutcome {
        guard var build = builds[buildID] else { return .notFound }
        guard build.status.isRetryable, build.queue == nil else { return .notRetryable(build.status) }
        guard let scoring = build.scoring else { return .unscored }
        let processor = scoring.processor, score = scoring.score
        let from = build.status
        move(&build, to: .needsBuild)
        build.job = JobStanding(failures: 0, notes: nil)
        build.result = nil
        build.builderID = nil
        build.started = .clear
        build.startedAt = nil
        build.finished = .clear
        build.queue = QueueRecord(.waiting)
        build.queue?.score = QueueScore(base: score, last: score, manual: false, queuedAt: now)
        build.enqueued = BuildRecord.Enqueued(processor: processor, score: score)
        builds[buildID] = build
        history.append(HistoryEntry(build: buildID, status: .needsBuild, attempt: build.attempt, builder: nil,
                                    message: "retried from \(from.rawValue)"))
        return .queued
    }

    /// What rescoring a build came to.
    public enum RescoreOutcome: Equatable, Sendable {
        /// Its score is this now.
        case scored(Int)
        /// Only builds in the queue (waiting or running) have a score.
        case notQueued(BuildStatus)
        case notFound
    }

    /// An operator sets a build's score, which replaces the computed one (and its age bonus) until cleared
    /// (`score == nil`: back to the base plus the age bonus it has earned by now).
    public mutating func rescore(_ buildID: Int64, to score: Int?, by actor: String? = nil) -> RescoreOutcome {
        attributed(to: actor) { $0.applyRescore(buildID, to: score) }
    }

    private mutating func applyRescore(_ buildID: Int64, to score: Int?) -> RescoreOutcome {
        guard var build = builds[buildID] else { return .notFound }
        guard var entry = build.queue?.score else { return .notQueued(build.status) }
        entry.manual = score != nil
        entry.last = score ?? entry.base + Scoring.ageScore(waited: now - entry.queuedAt)
        build.queue?.score = entry
        builds[buildID] = build
        history.append(HistoryEntry(build: buildID, status: build.status, attempt: build.attempt, builder: nil,
                                    message: score == nil ? "score back to the computed \(entry.last)" : "rescored to \(entry.last)"))
        return .scored(entry.last)
    }

    /// The queue entries whose score changed in this batch (a rescore).
    public var rescored: [(buildID: Int64, score: QueueScore)] {
        changedBuilds.compactMap { build in
            guard build.enqueued == nil, let score = build.queue?.score, originalBuilds[build.id]?.queue?.score != score
            else { return nil }
            return (build.id, score)
        }
    }

    // MARK: Carrying out the lifecycle's actions

    /// The outcome of an action that changes nothing: an abort to send, or an event to ignore.
    static func unchanged(_ action: BuildLifecycle.Action, buildID: Int64) -> EventOutcome {
        switch action {
        case .abort(let attempt, let reason):
            return .abort(buildID: buildID, attempt: attempt, reason: "build \(buildID): \(reason)")
        case .ignore(let why):
            return .ignored(why)
        default:
            return .ignored("no change for build \(buildID)")
        }
    }

    /// Writes the queue entry of a running or cancelling build from the machine's state.
    private func persistLease(_ machine: BuildLifecycle, _ build: inout BuildRecord) {
        switch machine.state {
        case .running(_, let builder, let leaseUntil):
            build.queue?.phase = .running(builder: builder, leaseUntil: leaseUntil)
        case .cancelling(_, let builder, let deadline):
            build.queue?.phase = .cancelling(builder: builder, deadline: deadline)
            build.queue?.abortSent = .clear
        default:
            break
        }
    }

    /// Does what a lifecycle action asks: finish, count a failure (then retry or fail), requeue.
    private mutating func carryOut(_ action: BuildLifecycle.Action, _ machine: inout BuildLifecycle, buildID: Int64,
                                   builder: String?, finishMessage: String? = nil, result: BuilderResult? = nil) {
        guard let current = builds[buildID] else { return }
        let holder = current.holder
        switch action {
        case .finish(let status, let builderFailure):
            finish(buildID, status: status, builder: builder, result: result,
                   message: status == .fullyBuilt ? nil : finishMessage)
            if let holder, builders[holder] != nil {
                if builderFailure {
                    builders[holder]!.standing.countFailure("did not confirm an abort")
                } else if result != nil {
                    builders[holder]!.standing.succeeded()
                }
            }
        case .countFailure(let reason):
            let detail = finishMessage.map { "\(reason): \($0)" } ?? "\(reason) (\(builder ?? "no builder"))"
            var build = current
            var standing = holder.flatMap { builders[$0]?.standing }
            let judgement = FailureLedger.infrastructureFailure(job: &build.job, builder: &standing, reason: detail)
            if let holder, let standing { builders[holder]?.standing = standing }
            builds[buildID] = build
            switch judgement.job {
            case .fail:
                finish(buildID, status: .failedToBuild, builder: builder, result: nil,
                       message: "failed \(build.job.failures) times, last: \(detail)")
            case .retry:
                requeue(buildID, builder: builder, message: "retrying: \(detail)")
            }
            machine.failureCounted(retry: judgement.job == .retry)
        case .reclaim, .renew, .start, .requestAbort, .ignore, .abort:
            break
        }
    }

    /// Ends a build in `status` and takes it out of the queue.
    private mutating func finish(_ buildID: Int64, status: BuildStatus, builder: String?, result: BuilderResult?,
                                 message: String?) {
        guard var build = builds[buildID] else { return }
        move(&build, to: status)
        if let result { build.result = result }
        build.finished = .now
        if status == .fullyBuilt { build.job.notes = nil } else if let message { build.job.notes = message }
        if status == .manualDepWait { build.dependencies = DepWait.relation(inMessage: message) }
        if let started = build.startedAt { buildDurations.append((status, now - started)) }
        build.queue = nil
        builds[buildID] = build
        history.append(HistoryEntry(build: buildID, status: status, attempt: build.attempt, builder: builder,
                                    message: message))
    }

    /// Puts a build back in the queue as NEEDSBUILD.
    private mutating func requeue(_ buildID: Int64, builder: String?, message: String) {
        guard var build = builds[buildID] else { return }
        move(&build, to: .needsBuild)
        build.builderID = nil
        build.started = .clear
        build.startedAt = nil
        build.queue?.phase = .waiting
        build.queue?.dispatchCleared = true
        build.queue?.logTail = .some(nil)
        builds[buildID] = build
        history.append(HistoryEntry(build: buildID, status: .needsBuild, attempt: build.attempt, builder: builder,
                                    message: message))
    }
}
