/// Builder reset, after Launchpad's clean status and `vm_reset_protocol`: a builder that ran a build is
/// DIRTY until it is CLEAN again, and gets no job meanwhile. Every decision about it is made here; the
/// store writes what these functions return and the master's reset runner carries out ``ResetPlan``s.

/// A builder's clean status (Launchpad's `BuilderCleanStatus`).
public enum CleanStatus: String, Sendable, CaseIterable, Codable {
    /// Fit for a job.
    case clean = "CLEAN"
    /// Ran a build (or holds one): it needs its reset before another job.
    case dirty = "DIRTY"
    /// Its reset is under way; it ends CLEAN or, failed or past its deadline, DIRTY with a failure counted.
    case cleaning = "CLEANING"
}

/// How a builder is reset.
public enum ResetMethod: String, Sendable, CaseIterable, Codable {
    /// Nothing beyond the builder's own clean-up: an agent removes the build's folder and overlay before it
    /// reports the build ended, a launchpad-buildd builder is sent `clean`. It is CLEAN once it says it is
    /// idle again.
    case none
    /// The master runs a command (`/bin/sh -c`, with `BUILDD_BUILDER` set to the builder's name), e.g. one
    /// that reverts the builder's virtual machine to a snapshot.
    case command
    /// The master POSTs to a URL (a cloud's or a hypervisor's API).
    case url
    /// The builder's agent resets its own machine: the master sends it `clean` on its control queue, it
    /// runs its configured `reset_command` and reports how that went.
    case agent
}

/// When a reset ends (Launchpad's reset protocols).
public enum ResetProtocol: String, Sendable, CaseIterable, Codable {
    /// Synchronous (Launchpad's 1.1): the command's success or the URL's 2xx answer is the reset's end.
    case synchronous = "1.1"
    /// Asynchronous (Launchpad's 2.0): the command or URL starts the reset; the builder stays CLEANING
    /// until whoever reset it says so (`builder clean NAME`, or the API), before its deadline.
    case asynchronous = "2.0"
}

/// A builder's reset, as an operator set it (`builder set NAME --reset-command ... --reset-protocol 2.0`).
public struct ResetPlan: Equatable, Sendable, Codable {
    public var method: ResetMethod
    /// The command or the URL; nil for ``ResetMethod/none``.
    public var target: String?
    public var resetProtocol: ResetProtocol
    /// From the reset's start until it must have ended; past it the reset counts as a builder failure.
    public var timeoutSeconds: Int

    public static let defaultTimeoutSeconds = 300

    public init(method: ResetMethod = .none, target: String? = nil, resetProtocol: ResetProtocol = .synchronous,
                timeoutSeconds: Int = ResetPlan.defaultTimeoutSeconds) {
        self.method = method
        self.target = target
        self.resetProtocol = resetProtocol
        self.timeoutSeconds = timeoutSeconds
    }

    /// The builder's own clean-up only.
    public static let none = ResetPlan()

    /// What makes it not a reset an operator may set, or nil. Only virtualized builders are reset
    /// (Launchpad's rule: a non-virtualized builder is a machine kept for trusted builds, cleaned by its
    /// own agent).
    public func problem(virtualized: Bool) -> String? {
        switch method {
        case .none: return target == nil ? nil : "a reset target needs a reset method"
        case .agent: if target != nil { return "an agent's reset is its own reset_command; give no target" }
        case .command:
            guard let target, target.contains(where: { !$0.isWhitespace }) else { return "the reset command is empty" }
        case .url:
            guard let target, target.hasPrefix("http://") || target.hasPrefix("https://") else {
                return "the reset URL must be http:// or https://"
            }
        }
        if !virtualized { return "only virtualized builders are reset; this one is not virtualized" }
        if !(1...86_400).contains(timeoutSeconds) { return "the reset timeout must be 1 to 86400 seconds" }
        if (target ?? "").utf8.count > 2048 { return "the reset command or URL is longer than 2048 bytes" }
        return nil
    }

    /// Whether the master resets this builder after each build (a virtualized builder with a reset set).
    public func resets(virtualized: Bool) -> Bool { method != .none && virtualized }

    /// `command (protocol 1.1, deadline 300 s)` or `none (...)`, as `builder show` and the builder's history
    /// say it. Without the target: a command or URL may hold a credential, and histories are shown to viewers.
    public var description: String {
        switch method {
        case .none: "none (the builder cleans itself after each build)"
        case .command, .url, .agent: "\(method.rawValue) (protocol \(resetProtocol.rawValue), deadline \(timeoutSeconds) s)"
        }
    }
}

/// What is known of a builder when its reset is decided.
public struct ResetFacts: Equatable, Sendable {
    public var clean: CleanStatus
    public var plan: ResetPlan
    public var virtualized: Bool
    /// Usable (ok and active): a broken or removed builder is not reset (an operator looks at it first).
    public var usable: Bool
    /// Kept out of automatic work by an operator: not reset either (it may be being debugged).
    public var manual: Bool
    /// Whether a running or cancelling build is recorded against it.
    public var holdsBuild: Bool
    /// When its reset under way must have ended (epoch seconds).
    public var deadline: Double?

    public init(clean: CleanStatus, plan: ResetPlan, virtualized: Bool, usable: Bool, manual: Bool,
                holdsBuild: Bool, deadline: Double?) {
        self.clean = clean
        self.plan = plan
        self.virtualized = virtualized
        self.usable = usable
        self.manual = manual
        self.holdsBuild = holdsBuild
        self.deadline = deadline
    }
}

public enum BuilderReset {
    /// What the master's pass over dirty and cleaning builders does with one.
    public enum PassDecision: Equatable, Sendable {
        case nothing
        /// Start its reset: CLEANING until `deadline`, the plan run by the master that decided it.
        case start(deadline: Double)
        /// Its reset passed its deadline: a builder failure is counted and it is DIRTY again (the next pass
        /// starts another reset while it is usable).
        case expired(reason: String)
    }

    /// The clean status a builder gets when a build starts on it.
    public static let whenBuildStarts = CleanStatus.dirty

    /// The clean status of a builder that says it is idle (it reported its build's end, or holds none): a
    /// builder the master does not reset is CLEAN (its own clean-up ran before it said so); one it resets
    /// stays as it is until its reset ends.
    public static func whenIdle(_ facts: ResetFacts) -> CleanStatus {
        facts.plan.resets(virtualized: facts.virtualized) ? facts.clean : .clean
    }

    /// The pass over a builder that is not CLEAN, at `now`.
    public static func pass(_ facts: ResetFacts, now: Double) -> PassDecision {
        guard facts.plan.resets(virtualized: facts.virtualized) else { return .nothing }
        switch facts.clean {
        case .clean:
            return .nothing
        case .dirty:
            guard facts.usable, !facts.manual, !facts.holdsBuild else { return .nothing }
            return .start(deadline: now + Double(facts.plan.timeoutSeconds))
        case .cleaning:
            guard let deadline = facts.deadline, now > deadline else { return .nothing }
            return .expired(reason: "reset did not end within \(facts.plan.timeoutSeconds) s")
        }
    }

    /// How running a reset's command or URL went.
    public enum RunResult: Equatable, Sendable {
        case succeeded
        case failed(String)
    }

    /// What a reset's run (`result`) makes of a CLEANING builder.
    public enum RunDecision: Equatable, Sendable {
        /// It is CLEAN: it may take a job.
        case clean
        /// It stays CLEANING until whoever resets it says it is done (the asynchronous protocol).
        case awaitCompletion
        /// A builder failure is counted; it is DIRTY again.
        case failed(reason: String)
    }

    public static func afterRun(_ result: RunResult, plan: ResetPlan) -> RunDecision {
        switch result {
        case .failed(let why): .failed(reason: "reset failed: \(why)")
        case .succeeded: plan.resetProtocol == .synchronous ? .clean : .awaitCompletion
        }
    }

    /// What an operator's request to reset a builder now (the builder page's "Reset") comes to.
    public enum RequestDecision: Equatable, Sendable {
        /// It is DIRTY now: the next pass starts its reset (once it is usable and not in manual mode).
        case markDirty
        /// Nothing to change: its reset is already due, under way, or comes after the build it holds.
        case already(String)
        /// It cannot be reset.
        case refused(String)
    }

    /// An operator asks for a reset of a builder now. Only a builder the master resets can be (the others
    /// clean themselves after each build); one that holds a build is reset after it anyway.
    public static func requested(_ facts: ResetFacts) -> RequestDecision {
        guard facts.plan.resets(virtualized: facts.virtualized) else {
            return .refused(facts.virtualized
                ? "this builder has no reset set (builder set-reset NAME): it cleans itself after each build"
                : "only virtualized builders are reset; this one is not virtualized")
        }
        if facts.holdsBuild { return .already("it holds a build: its reset starts when that build ends") }
        switch facts.clean {
        case .dirty: return .already("its reset is already due")
        case .cleaning: return .already("its reset is under way")
        case .clean: return .markDirty
        }
    }

    /// Whoever reset the builder says it is done (`builder clean NAME`): it is CLEAN if its reset was
    /// under way or due; nil when there is nothing to complete.
    public static func completed(_ clean: CleanStatus) -> CleanStatus? {
        clean == .clean ? nil : .clean
    }

    /// Whether a builder's own report of a reset may end it: only when its agent is the one that resets it.
    /// An agent cannot say it is clean when the master resets its machine from outside (a compromised
    /// machine would skip the revert that is meant to wipe it).
    public static func builderMayReport(_ plan: ResetPlan) -> Bool { plan.method == .agent }

    /// Why a builder may not accept a job while `clean`, or nil (the core refuses such an accept whatever
    /// route the job took).
    public static func refusal(_ clean: CleanStatus) -> String? {
        clean == .clean ? nil : "the builder is \(clean.rawValue) and waits for its reset"
    }

    /// ``ResetPlan/resets(virtualized:)`` as a SQL condition on the builder row `b`: such a builder takes
    /// its jobs addressed to it, when CLEAN, never from a shared queue (it may be idle and DIRTY).
    public static func sqlResets(builder b: String = "b") -> String {
        "(\(b).virtualized AND \(b).reset_method <> '\(ResetMethod.none.rawValue)')"
    }
}
