/// The life of one queued build, as a value: the dispatch contract and its leases without I/O.
///
/// The store loads a queue row into a `BuildLifecycle`, feeds it one input (an agent event, a clock
/// tick, an operator's cancel) with the database's current time, writes back the new state and carries
/// out the returned ``Action``. Tests drive it with a test clock. Times are seconds (any epoch).
public struct BuildLifecycle: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        /// Needs a builder.
        case waiting
        /// Claimed as `attempt` and published at `since`; not yet accepted.
        case dispatched(attempt: Int32, since: Double)
        /// Accepted by `builder`; its lease runs until `leaseUntil`.
        case running(attempt: Int32, builder: Int, leaseUntil: Double)
        /// Asked to abort; the builder has until `deadline` to confirm.
        case cancelling(attempt: Int32, builder: Int, deadline: Double)
        /// Out of the queue: finished, failed or cancelled.
        case done
    }

    /// What the store must do after an input.
    public enum Action: Equatable, Sendable {
        /// Nothing to change (a repeat, or an event of an old attempt that needs no answer).
        case ignore(String)
        /// Tell the builder to stop this attempt; nothing else changes.
        case abort(attempt: Int32, reason: String)
        /// The attempt started on the builder.
        case start
        /// The lease was renewed (or, while cancelling, left as it is).
        case renew
        /// The build ends in this status.
        case finish(BuildStatus, builderFailure: Bool)
        /// An infrastructure failure: count it (``FailureJudgement``), then retry or fail the job.
        case countFailure(String)
        /// The claim ran out unaccepted: back to waiting.
        case reclaim
        /// The running build was asked to stop; tell the builder.
        case requestAbort
    }

    public private(set) var state: State

    /// A cancelling build's builder is told to abort again when it has not confirmed within this many
    /// seconds of the last request (until the abort deadline ends the build).
    public static let abortResendSeconds = 30

    public init(state: State) {
        self.state = state
    }

    /// The attempt the state is about, if any.
    public var attempt: Int32? {
        switch state {
        case .dispatched(let attempt, _), .running(let attempt, _, _), .cancelling(let attempt, _, _): return attempt
        case .waiting, .done: return nil
        }
    }

    /// The dispatcher claimed the build as `attempt` (one more than the last).
    public mutating func claim(attempt: Int32, now: Double) -> Action {
        guard case .waiting = state else { return .ignore("not waiting") }
        state = .dispatched(attempt: attempt, since: now)
        return .start
    }

    /// The claim of `attempt` is given up before its job went out (publishing it failed): back to waiting. The
    /// attempt stays used. Anything else (another attempt, a build already accepted) is left as it is.
    public mutating func release(attempt: Int32) -> Action {
        guard case .dispatched(let current, _) = state, current == attempt else { return .ignore("not this claim") }
        state = .waiting
        return .reclaim
    }

    /// Whether a cancelling build's builder is to be told (again) to abort: it was not told yet (`lastSent`
    /// nil), or not for ``abortResendSeconds``.
    public func abortDue(now: Double, lastSent: Double?) -> Bool {
        guard case .cancelling = state else { return false }
        guard let lastSent else { return true }
        return now - lastSent > Double(Self.abortResendSeconds)
    }

    /// `accepted(attempt)` from `builder`. Applies only to the current, unaccepted attempt, on a usable
    /// builder that runs nothing else and may take the build (`refusal` says why it may not: its
    /// placement, ``Placement``, or a job addressed to another builder).
    public mutating func accepted(attempt: Int32, builder: Int, builderUsable: Bool, builderBusy: Bool,
                                  refusal: String? = nil, now: Double, lease: Double) -> Action {
        switch state {
        case .dispatched(let current, _) where current == attempt:
            guard builderUsable else { return .abort(attempt: attempt, reason: "builder is disabled or in manual mode") }
            if let refusal { return .abort(attempt: attempt, reason: refusal) }
            guard !builderBusy else { return .abort(attempt: attempt, reason: "builder already runs another build") }
            state = .running(attempt: attempt, builder: builder, leaseUntil: now + lease)
            return .start
        case .running(let current, let owner, _) where current == attempt && owner == builder:
            return .ignore("accepted repeated")
        default:
            return .abort(attempt: attempt, reason: "attempt \(attempt) is not current")
        }
    }

    /// A heartbeat naming (attempt) from `builder`. Renews a running build's lease; a cancelling build
    /// keeps its deadline. A heartbeat of this very attempt after it ended is late, not stale.
    public mutating func heartbeat(attempt: Int32, builder: Int, now: Double, lease: Double,
                                   endedAttempt: (attempt: Int32, builder: Int)? = nil) -> Action {
        switch state {
        case .running(let current, let owner, _) where current == attempt && owner == builder:
            state = .running(attempt: attempt, builder: builder, leaseUntil: now + lease)
            return .renew
        case .cancelling(let current, let owner, _) where current == attempt && owner == builder:
            return .renew
        case .done where endedAttempt.map({ $0.attempt == attempt && $0.builder == builder }) == true:
            return .ignore("late heartbeat of a finished attempt")
        default:
            return .abort(attempt: attempt, reason: "attempt \(attempt) is not current")
        }
    }

    /// The builder says it is idle: a build it was running is lost.
    public mutating func builderIdle(builder: Int) -> Action {
        switch state {
        case .running(_, let owner, _) where owner == builder:
            return .countFailure("builder reported idle while building")
        case .cancelling(_, let owner, _) where owner == builder:
            state = .done
            return .finish(.cancelled, builderFailure: false)
        default:
            return .ignore("not running on this builder")
        }
    }

    /// `finished(attempt, result)` from `builder`; `filesMissing` names declared files the store lacks.
    public mutating func finished(attempt: Int32, builder: Int, result: BuilderResult,
                                  filesMissing: [String] = []) -> Action {
        let wasCancelling: Bool
        switch state {
        case .running(let current, let owner, _) where current == attempt && owner == builder: wasCancelling = false
        case .cancelling(let current, let owner, _) where current == attempt && owner == builder: wasCancelling = true
        default: return .ignore("finished for an attempt that is not current")
        }
        if !filesMissing.isEmpty {
            return .countFailure("result files missing or different from the upload: \(filesMissing.joined(separator: ", "))")
        }
        switch result.disposition(wasCancelling: wasCancelling) {
        case .finish(let status):
            state = .done
            // A builder that failed while cancelling did not stop cleanly: that counts against it.
            return .finish(status, builderFailure: wasCancelling && result == .builderFail)
        case .countFailure:
            return .countFailure(result.rawValue)
        }
    }

    /// An operator cancels the build: at once when it has not started, else by asking the builder.
    public mutating func cancel(now: Double, deadline: Double) -> Action {
        switch state {
        case .waiting, .dispatched:
            state = .done
            return .finish(.cancelled, builderFailure: false)
        case .running(let attempt, let builder, _):
            state = .cancelling(attempt: attempt, builder: builder, deadline: now + deadline)
            return .requestAbort
        case .cancelling:
            return .ignore("already cancelling")
        case .done:
            return .ignore("not in the queue")
        }
    }

    /// The clock moved: claims nobody accepted go back to waiting, leases run out, unconfirmed cancels end.
    public mutating func tick(now: Double, acceptTimeout: Double) -> Action {
        switch state {
        case .dispatched(_, let since) where now - since > acceptTimeout:
            state = .waiting
            return .reclaim
        case .running(_, _, let leaseUntil) where now > leaseUntil:
            return .countFailure("lease expired: no heartbeat")
        case .cancelling(_, _, let deadline) where now > deadline:
            state = .done
            return .finish(.cancelled, builderFailure: true)
        default:
            return .ignore("nothing due")
        }
    }

    /// After a counted failure the store retries (back to waiting) or fails the job (done).
    public mutating func failureCounted(retry: Bool) {
        state = retry ? .waiting : .done
    }
}
