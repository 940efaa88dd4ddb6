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
}
