import BuilddShared

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
    public static func decide(_ status: LegacyStatus, expected: LegacyBuilderSnapshot.CurrentBuild?, abortSent: Bool,
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
