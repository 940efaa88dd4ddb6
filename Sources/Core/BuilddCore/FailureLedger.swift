/// Thresholds of Launchpad's failure counting.
public enum FailureThresholds {
    /// A job that failed for infrastructure reasons this often ends FAILEDTOBUILD.
    public static let job = 3
    /// A builder that failed this often in a row is marked not ok.
    public static let builder = 5
}

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

/// A builder's standing in the failure ledger: its failures in a row, whether it may be given work, and
/// why it may not. Every change of a builder's failure count or of its `builderok` goes through here:
/// failures of builds judged with their job, failures that are the builder's alone, faults that disable
/// it at once, and the good results that end a run of failures.
public struct BuilderStanding: Equatable, Sendable {
    public var failures: Int
    public var ok: Bool
    public var notes: String?
    /// Faults of a legacy builder counted while it held no build, since its last good answer: forgiven together
    /// when it answers well again (``forgiveIdleFaults()``). Stored with the builder, so a master that takes the
    /// builder over, or restarts, forgives what another counted.
    public var idleFaults = 0
    /// The reason of the last failure counted since this standing was read (kept for the builder's
    /// history, not stored with the builder).
    public internal(set) var lastFailure: String?

    public init(failures: Int, ok: Bool, notes: String?) {
        self.failures = failures
        self.ok = ok
        self.notes = notes
    }

    /// Equal standings are those stored alike: ``lastFailure`` is not part of the standing.
    public static func == (lhs: BuilderStanding, rhs: BuilderStanding) -> Bool {
        lhs.failures == rhs.failures && lhs.ok == rhs.ok && lhs.notes == rhs.notes && lhs.idleFaults == rhs.idleFaults
    }

    /// A failure with no job to share the blame (an abort it never confirmed, a fault while it held no
    /// build). It is broken at ``FailureThresholds/builder`` in a row. Returns whether it is broken now.
    @discardableResult
    public mutating func countFailure(_ reason: String) -> Bool {
        failures += 1
        lastFailure = reason
        if failures >= FailureThresholds.builder {
            ok = false
            notes = reason
        }
        return !ok
    }

    /// A fault that leaves no doubt (its status call failed, an operator said so): broken at once.
    public mutating func disable(_ reason: String) {
        ok = false
        notes = reason
    }

    /// A build ended with a verdict from the builder: its run of failures is over.
    public mutating func succeeded() {
        failures = 0
        idleFaults = 0
    }

    /// A fault of a legacy builder that held no build: counted as a failure of its own (broken at
    /// ``FailureThresholds/builder`` in a row) and as one to forgive when it answers well again; its reason is
    /// the builder's note. Returns whether it is broken now.
    @discardableResult
    public mutating func countIdleFault(_ reason: String) -> Bool {
        let broken = countFailure(reason)
        idleFaults += 1
        notes = reason
        return broken
    }

    /// A legacy builder answered well again: the faults counted while it held no build are forgiven (the
    /// threshold is for failures in a row) and its notes go. Failures counted with builds stay, and a builder
    /// already marked not ok stays so until an operator enables it.
    public mutating func forgiveIdleFaults() {
        guard ok else { return }
        failures = max(failures - idleFaults, 0)
        idleFaults = 0
        notes = nil
    }

    /// An operator puts the builder back in service.
    public mutating func reset() {
        failures = 0
        idleFaults = 0
        ok = true
        notes = nil
    }
}

/// A job's standing in the failure ledger: its infrastructure failures and the note of the last one.
public struct JobStanding: Equatable, Sendable {
    public var failures: Int
    public var notes: String?

    public init(failures: Int, notes: String?) {
        self.failures = failures
        self.notes = notes
    }
}

/// The one place where infrastructure failures are counted and judged.
public enum FailureLedger {
    /// An infrastructure failure of a job, on `builder` when one held it: both are counted and judged
    /// (``FailureJudgement``). The builder is broken when judged so. Returns the judgement for the job
    /// (with no builder, the job alone is judged).
    public static func infrastructureFailure(job: inout JobStanding, builder: inout BuilderStanding?,
                                             reason: String) -> FailureJudgement {
        job.failures += 1
        job.notes = reason
        guard var standing = builder else {
            return FailureJudgement(builder: .count, job: job.failures >= FailureThresholds.job ? .fail : .retry)
        }
        let judgement = FailureJudgement.judge(builderFailures: standing.failures + 1, jobFailures: job.failures)
        switch judgement.builder {
        case .count:
            standing.failures += 1
            standing.lastFailure = reason
        case .forgive:
            break
        case .fail:
            standing.failures += 1
            standing.lastFailure = reason
            standing.disable("failed \(standing.failures) times in a row, last: \(reason)")
        }
        builder = standing
        return judgement
    }
}
