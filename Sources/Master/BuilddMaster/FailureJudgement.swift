/// Who is to blame for an infrastructure failure, after Launchpad's build manager.
///
/// Both counts include the failure being judged. When the job has failed more often than the builder,
/// the job is blamed: the builder's count does not keep this failure, and the job fails once it reached
/// ``FailureThresholds/job``. Otherwise the builder is blamed: it is marked broken once it reached
/// ``FailureThresholds/builder`` failures in a row, and the job is retried.
public struct FailureJudgement: Equatable, Sendable {
    public enum BuilderAction: Equatable, Sendable {
        /// The builder keeps the failure in its count.
        case count
        /// The failure is not the builder's: its count goes back to what it was.
        case forgive
        /// The builder failed too often: mark it not ok.
        case fail
    }

    public enum JobAction: Equatable, Sendable {
        case retry
        case fail
    }

    public let builder: BuilderAction
    public let job: JobAction

    public init(builder: BuilderAction, job: JobAction) {
        self.builder = builder
        self.job = job
    }

    public static func judge(builderFailures: Int, jobFailures: Int) -> FailureJudgement {
        if jobFailures > builderFailures {
            return FailureJudgement(builder: .forgive, job: jobFailures >= FailureThresholds.job ? .fail : .retry)
        }
        return FailureJudgement(builder: builderFailures >= FailureThresholds.builder ? .fail : .count, job: .retry)
    }
}
