/// What one `status()` of a launchpad-buildd builder said, as the core reads it.
public struct LegacyReading: Equatable, Sendable {
    public enum State: Equatable, Sendable {
        case idle, building, waiting, aborting
    }

    public var state: State
    /// launchpad-buildd's name of the build it holds (`<TYPE>-<id>`), if any.
    public var buildID: String?
    /// WAITING: its result; nil when the builder named a result nobody knows.
    public var result: BuilderResult?
    /// BUILDING: the log tail it showed, which progress is judged by.
    public var logTail: [UInt8]?

    public init(state: State, buildID: String? = nil, result: BuilderResult? = nil, logTail: [UInt8]? = nil) {
        self.state = state
        self.buildID = buildID
        self.result = result
        self.logTail = logTail
    }
}

/// The build the database says a legacy builder runs, as the core needs it.
public struct LegacyExpectation: Equatable, Sendable {
    /// launchpad-buildd's name for it (`<TYPE>-<id>`).
    public var cookie: String
    /// Whether it is being cancelled.
    public var cancelling: Bool

    public init(cookie: String, cancelling: Bool) {
        self.cookie = cookie
        self.cancelling = cancelling
    }
}

/// How long a legacy builder has shown no progress: ABORTING since, or BUILDING the same build with the same
/// log tail. Times come from the caller (the follower's injected clock), so the judgement of a wedged
/// builder is tested with a clock moved by hand.
public struct LegacyProgress: Equatable, Sendable {
    private var last: (state: LegacyReading.State, buildID: String?, tail: [UInt8]?, since: Double)?

    public init() {}

    public static func == (lhs: LegacyProgress, rhs: LegacyProgress) -> Bool {
        lhs.last?.state == rhs.last?.state && lhs.last?.buildID == rhs.last?.buildID && lhs.last?.tail == rhs.last?.tail
            && lhs.last?.since == rhs.last?.since
    }

    /// Notes `reading` at `now` and returns the seconds the builder has shown no progress (0 on any change).
    public mutating func observe(_ reading: LegacyReading, now: Double) -> Double {
        if let last, last.state == reading.state, last.buildID == reading.buildID,
           reading.state == .aborting || last.tail == reading.logTail {
            return now - last.since
        }
        last = (reading.state, reading.buildID, reading.logTail, now)
        return 0
    }
}

/// What to do after one `status()` of a legacy builder: a pure decision from what the builder says,
/// what the database expects it to run, and how long it has shown no progress. No I/O; unit-tested.
public enum LegacyPolicy {
    /// What to tell the builder after the master's side was dealt with.
    public enum Cleanup: Equatable, Sendable {
        case none
        /// `clean()` (a WAITING builder).
        case clean
        /// `abort()` (a BUILDING builder).
        case abort
    }

    public enum Step: Equatable, Sendable {
        /// Idle, clean and usable: take the next job of its processor.
        case takeJob
        /// Nothing to do now (idle and not usable, or ABORTING within its deadline).
        case wait
        /// The expected build runs: renew its lease and show the log tail; `abort` when it is being cancelled
        /// and the builder has not been asked yet.
        case building(abort: Bool)
        /// The expected build ended with this result: collect its files, report, then `clean()`.
        case collect(BuilderResult)
        /// The builder does not have the build the database gives it: requeue it, then clean up.
        case lost(reason: String, then: Cleanup)
        /// The builder holds something nobody expects: clean up.
        case cleanup(Cleanup)
        /// No progress past a deadline: fail the builder (and requeue its build).
        case wedged(String)
    }

    public struct Deadlines: Sendable, Equatable {
        /// BUILDING with an unchanged log tail for this long is a wedged builder. Default 3 hours.
        public var silentBuild: Double = 3 * 3600
        /// ABORTING for this long is a wedged builder. Default 180 s (the cancel deadline).
        public var aborting: Double = 180

        public init(silentBuild: Double = 3 * 3600, aborting: Double = 180) {
            self.silentBuild = silentBuild
            self.aborting = aborting
        }
    }

    /// - Parameters:
    ///   - expected: the build the database says this builder runs, if any.
    ///   - abortSent: whether `abort()` was already called for the expected build.
    ///   - stalledFor: seconds the builder has been ABORTING, or BUILDING with the same log tail.
    ///   - mayTakeWork: builder ok, not manual, verified.
    public static func decide(_ status: LegacyReading, expected: LegacyExpectation?, abortSent: Bool,
                              stalledFor: Double, mayTakeWork: Bool, deadlines: Deadlines) -> Step {
        let matches = expected.map { status.buildID == $0.cookie } ?? false
        switch status.state {
        case .idle:
            if let expected {
                return .lost(reason: "builder is idle, it lost \(expected.cookie)", then: .none)
            }
            return mayTakeWork ? .takeJob : .wait
        case .building:
            if stalledFor >= deadlines.silentBuild {
                return .wedged("BUILDING \(status.buildID ?? "?") with no new output for \(Int(stalledFor)) s")
            }
            if let expected {
                if matches { return .building(abort: expected.cancelling && !abortSent) }
                return .lost(reason: "builder runs \(status.buildID ?? "?"), not \(expected.cookie)", then: .abort)
            }
            return .cleanup(.abort)
        case .waiting:
            if let expected {
                guard matches else {
                    return .lost(reason: "builder finished \(status.buildID ?? "?"), not \(expected.cookie)", then: .clean)
                }
                guard let result = status.result else {
                    return .collect(.builderFail)  // an unknown BuildStatus is the builder's failure
                }
                return .collect(result)
            }
            return .cleanup(.clean)
        case .aborting:
            if stalledFor >= deadlines.aborting {
                return .wedged("ABORTING \(status.buildID ?? "?") for \(Int(stalledFor)) s")
            }
            return .wait
        }
    }
}
