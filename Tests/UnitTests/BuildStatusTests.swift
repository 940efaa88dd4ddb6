import BuilddShared
import Testing

@Suite(.timeLimit(.minutes(1))) struct BuildStatusTests {
    @Test func terminalStatesNeverChange() {
        for terminal in [BuildStatus.fullyBuilt, .superseded] {
            #expect(terminal.isTerminal)
            for next in BuildStatus.allCases { #expect(!terminal.canTransition(to: next)) }
        }
    }

    @Test func failedStatesOnlyGoBackToNeedsBuild() {
        for failed in [BuildStatus.failedToBuild, .manualDepWait, .chrootWait, .failedToUpload, .cancelled] {
            #expect(failed.isRetryable)
            for next in BuildStatus.allCases {
                #expect(failed.canTransition(to: next) == (next == .needsBuild), "\(failed) -> \(next)")
            }
        }
    }

    @Test func buildingCanEndEveryWay() {
        #expect(BuildStatus.needsBuild.canTransition(to: .building))
        #expect(BuildStatus.building.canTransition(to: .gathering))
        #expect(BuildStatus.building.canTransition(to: .cancelling))
        #expect(BuildStatus.gathering.canTransition(to: .fullyBuilt))
        #expect(BuildStatus.cancelling.canTransition(to: .cancelled))
        #expect(!BuildStatus.needsBuild.canTransition(to: .fullyBuilt))
    }

    @Test func resultsMapAsDesignSays() {
        #expect(BuilderResult.ok.disposition(wasCancelling: false) == .finish(.fullyBuilt))
        #expect(BuilderResult.packageFail.disposition(wasCancelling: false) == .finish(.failedToBuild))
        #expect(BuilderResult.depFail.disposition(wasCancelling: false) == .finish(.manualDepWait))
        #expect(BuilderResult.chrootFail.disposition(wasCancelling: false) == .finish(.chrootWait))
        #expect(BuilderResult.builderFail.disposition(wasCancelling: false) == .countFailure)
        #expect(BuilderResult.givenBack.disposition(wasCancelling: false) == .countFailure)
        #expect(BuilderResult.aborted.disposition(wasCancelling: true) == .finish(.cancelled))
        #expect(BuilderResult.aborted.disposition(wasCancelling: false) == .countFailure)
        // A cancelled build is never requeued, whatever stopped it.
        #expect(BuilderResult.builderFail.disposition(wasCancelling: true) == .finish(.cancelled))
        #expect(BuilderResult.givenBack.disposition(wasCancelling: true) == .finish(.cancelled))
    }

    @Test(arguments: [(Int32(0), BuilderResult.ok), (1, .packageFail), (2, .packageFail), (3, .depFail),
                      (4, .chrootFail), (5, .builderFail), (127, .builderFail), (255, .builderFail)])
    func exitStatusMapsByBuilddsConventionNotSbuilds(status: Int32, result: BuilderResult) {
        #expect(BuilderResult.fromExitStatus(status) == result)
    }

    /// A failure the build reported while its work folder was full is the machine's: BUILDERFAIL, retried
    /// elsewhere. Full is under 2% free, capped at 64 MiB; success, and failures already the machine's, stand.
    @Test func aBuildThatFailedOnAFullWorkFolderIsTheBuildersFailure() {
        let mib: Int64 = 1 << 20
        for result in [BuilderResult.packageFail, .depFail, .chrootFail] {
            #expect(result.givenWorkFolder(freeBytes: 0, totalBytes: 2 * mib) == .builderFail)
            #expect(result.givenWorkFolder(freeBytes: 63 * mib, totalBytes: 100_000 * mib) == .builderFail)
            #expect(result.givenWorkFolder(freeBytes: 65 * mib, totalBytes: 100_000 * mib) == result, "64 MiB is room")
            #expect(result.givenWorkFolder(freeBytes: 3 * mib, totalBytes: 100 * mib) == result, "3% is room")
            #expect(result.givenWorkFolder(freeBytes: mib, totalBytes: 100 * mib) == .builderFail, "1% is full")
        }
        for result in [BuilderResult.ok, .builderFail, .givenBack, .aborted] {
            #expect(result.givenWorkFolder(freeBytes: 0, totalBytes: 2 * mib) == result)
        }
    }
}
