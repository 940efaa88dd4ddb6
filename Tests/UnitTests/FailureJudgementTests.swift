import BuilddCore
import BuilddMasterKit
import Testing

@Suite(.timeLimit(.minutes(1))) struct FailureJudgementTests {
    @Test(arguments: [
        // (builder failures, job failures) -> builder action, job action
        (1, 1, FailureJudgement(builder: .count, job: .retry)),       // first failure of both: blame the builder
        (1, 2, FailureJudgement(builder: .forgive, job: .retry)),     // the job failed more: blame the job
        (1, 3, FailureJudgement(builder: .forgive, job: .fail)),      // ... and fail it at three
        (4, 3, FailureJudgement(builder: .count, job: .retry)),       // the builder failed more: retry the job
        (5, 1, FailureJudgement(builder: .fail, job: .retry)),        // five in a row: the builder is broken
        (5, 5, FailureJudgement(builder: .fail, job: .retry)),        // a tie blames the builder
        (2, 7, FailureJudgement(builder: .forgive, job: .fail)),
    ])
    func launchpadBlame(builderFailures: Int, jobFailures: Int, expected: FailureJudgement) {
        #expect(FailureJudgement.judge(builderFailures: builderFailures, jobFailures: jobFailures) == expected)
    }

    @Test func ageBonusSQLFollowsTheTable() {
        let sql = Scoring.ageScoreSQL(queuedColumn: "q")
        #expect(sql.hasPrefix("(CASE WHEN q < now() - interval '14400 seconds' THEN 100"))
        #expect(sql.contains("WHEN q < now() - interval '300 seconds' THEN 5 ELSE 0 END)"))
    }
}
