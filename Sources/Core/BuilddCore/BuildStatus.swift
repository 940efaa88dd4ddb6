/// The status of a build, with Launchpad's names.
public enum BuildStatus: String, Codable, Sendable, CaseIterable {
    case needsBuild = "NEEDSBUILD"
    case fullyBuilt = "FULLYBUILT"
    case failedToBuild = "FAILEDTOBUILD"
    case manualDepWait = "MANUALDEPWAIT"
    case chrootWait = "CHROOTWAIT"
    case superseded = "SUPERSEDED"
    case building = "BUILDING"
    case failedToUpload = "FAILEDTOUPLOAD"
    case uploading = "UPLOADING"
    case cancelling = "CANCELLING"
    case cancelled = "CANCELLED"
    case gathering = "GATHERING"

    /// FULLYBUILT and SUPERSEDED never change again.
    public var isTerminal: Bool { self == .fullyBuilt || self == .superseded }

    /// Failed or cancelled states that may only go back to NEEDSBUILD (a retry).
    public var isRetryable: Bool {
        switch self {
        case .failedToBuild, .manualDepWait, .chrootWait, .failedToUpload, .cancelled: return true
        default: return false
        }
    }

    /// Whether the build still needs or holds a builder.
    public var isActive: Bool {
        switch self {
        case .needsBuild, .building, .cancelling, .gathering, .uploading: return true
        default: return false
        }
    }

    /// Whether a build may move from `self` to `next`. The store refuses any other change of a build's status
    /// twice: the core's batch is checked before it is written (``LifecycleCore/forbiddenTransitions``), and
    /// the database's `build_status_guard` trigger checks every update against `build_transition`, whose rows
    /// are ``writableRows`` (a test compares them).
    ///
    /// A build that ends OK goes from BUILDING (or CANCELLING) to FULLYBUILT in one step: its files were
    /// uploaded and are verified in the same transaction, with a GATHERING line in its history.
    public func canTransition(to next: BuildStatus) -> Bool {
        if self == next { return false }
        if isTerminal { return false }
        if isRetryable { return next == .needsBuild }
        switch self {
        case .needsBuild:
            return [.building, .cancelled, .superseded, .failedToBuild].contains(next)
        case .building:
            return [.gathering, .fullyBuilt, .needsBuild, .failedToBuild, .manualDepWait, .chrootWait,
                    .cancelling, .cancelled].contains(next)
        case .gathering:
            return [.uploading, .fullyBuilt, .failedToBuild, .manualDepWait, .failedToUpload,
                    .needsBuild].contains(next)
        case .uploading:
            return [.fullyBuilt, .failedToUpload, .needsBuild].contains(next)
        case .cancelling:
            return [.cancelled, .needsBuild, .failedToBuild, .gathering, .fullyBuilt, .manualDepWait,
                    .chrootWait].contains(next)
        default:
            return false
        }
    }

    /// Every allowed (from, to) pair, in a fixed order.
    public static var transitionRows: [(from: BuildStatus, to: BuildStatus)] {
        allCases.flatMap { from in allCases.filter { from.canTransition(to: $0) }.map { (from, $0) } }
    }

    /// Whether one write of a build's row may change its status from `self` to `next`: one step of the graph,
    /// or a waiting build accepted and ended in the same batch of reports (NEEDSBUILD, then BUILDING, then
    /// where a build may go from BUILDING). The core checks each step; the database sees only the write.
    public func mayWrite(to next: BuildStatus) -> Bool {
        canTransition(to: next)
            || (self == .needsBuild && next != .needsBuild && BuildStatus.building.canTransition(to: next))
    }

    /// The rows of the database's `build_transition` table: every (from, to) that ``mayWrite(to:)`` allows.
    public static var writableRows: [(from: BuildStatus, to: BuildStatus)] {
        allCases.flatMap { from in allCases.filter { from.mayWrite(to: $0) }.map { (from, $0) } }
    }
}

/// A builder's verdict on a build (launchpad-buildd's `BuildStatus.*`).
public enum BuilderResult: String, Codable, Sendable, CaseIterable {
    case ok = "OK"
    case packageFail = "PACKAGEFAIL"
    case depFail = "DEPFAIL"
    case chrootFail = "CHROOTFAIL"
    case builderFail = "BUILDERFAIL"
    case givenBack = "GIVENBACK"
    case aborted = "ABORTED"

    /// How a build command's exit status maps to a result (buildd's convention, not sbuild's: under
    /// launchpad-buildd sbuild exits 3 for GIVENBACK and 4 for BUILDERFAIL, so a wrapper translates):
    /// 0 OK; 1 and 2 PACKAGEFAIL; 3 DEPFAIL; 4 CHROOTFAIL (the build root could not be made: no chroot, a
    /// tarball that does not unpack, a mount that fails); anything else (a signal, 127 for a missing
    /// command) BUILDERFAIL.
    public static func fromExitStatus(_ status: Int32) -> BuilderResult {
        switch status {
        case 0: return .ok
        case 1, 2: return .packageFail
        case 3: return .depFail
        case 4: return .chrootFail
        default: return .builderFail
        }
    }
}

extension BuilderResult {
    /// Whether a filesystem with `freeBytes` of `totalBytes` left to its writer is full: less than 2% of it,
    /// and never more than 64 MiB (a big disk with 64 MiB left has no room for a build either).
    public static func isFull(freeBytes: Int64, totalBytes: Int64) -> Bool {
        freeBytes < min(64 << 20, totalBytes / 50)
    }

    /// The result of a build that ended with its builder's work folder full: a failure the build command
    /// reported (PACKAGEFAIL, DEPFAIL, CHROOTFAIL) is the machine's, not the package's - BUILDERFAIL, so the
    /// build is retried (on another builder) and the failure counted against this one. Other results stand.
    public func givenWorkFolder(freeBytes: Int64, totalBytes: Int64) -> BuilderResult {
        guard [.packageFail, .depFail, .chrootFail].contains(self),
              Self.isFull(freeBytes: freeBytes, totalBytes: totalBytes) else { return self }
        return .builderFail
    }
}

/// What the master does with a builder's result (DESIGN.md's table).
public enum ResultDisposition: Equatable, Sendable {
    /// The build ends in this status (after its files are gathered, for OK).
    case finish(BuildStatus)
    /// An infrastructure failure: count it against the job and the builder, then retry.
    case countFailure
}

extension BuilderResult {
    /// The disposition of this result; `wasCancelling` says whether the build had been asked to stop.
    public func disposition(wasCancelling: Bool) -> ResultDisposition {
        switch self {
        case .ok: return .finish(.fullyBuilt)
        case .packageFail: return .finish(.failedToBuild)
        case .depFail: return .finish(.manualDepWait)
        case .chrootFail: return .finish(.chrootWait)
        // A cancelled build stays cancelled whatever stopped it: it is never requeued.
        case .builderFail, .givenBack, .aborted: return wasCancelling ? .finish(.cancelled) : .countFailure
        }
    }
}
