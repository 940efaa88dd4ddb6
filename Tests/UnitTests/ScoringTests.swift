import BuilddCore
import Testing

@Suite(.timeLimit(.minutes(1))) struct ScoringTests {
    @Test func launchpadComponentsAddUp() {
        #expect(Scoring.score(urgency: .medium, pocket: .release, component: .main) == 10 + 1500 + 1000)
        #expect(Scoring.score(urgency: .emergency, pocket: .security, component: .partner, archive: .private)
            == 20 + 4500 + 1250 + 10_000)
        #expect(Scoring.score(urgency: .low, pocket: .backports, component: .multiverse, archive: .copy) == 5 + 0 + 0 - 2600)
        #expect(Scoring.score(urgency: .high, pocket: .proposed, component: .universe) == 15 + 3000 + 250)
        #expect(Scoring.score(urgency: .high, pocket: .updates, component: .restricted) == 15 + 3000 + 750)
    }

    @Test(arguments: [(0, 0), (300, 0), (301, 5), (900, 5), (901, 10), (1801, 15), (3601, 20), (7201, 50), (14401, 100),
                      (1_000_000, 100)])
    func ageBonusAfterEachThreshold(waited: Int, bonus: Int) {
        #expect(Scoring.ageScore(waitedSeconds: waited) == bonus)
    }

    @Test func securityOutranksUrgencyAndPrivateOutranksAll() {
        let lowSecurity = Scoring.score(urgency: .low, pocket: .security, component: .main)
        let emergencyRelease = Scoring.score(urgency: .emergency, pocket: .release, component: .main)
        #expect(lowSecurity > emergencyRelease)
        let privateBackport = Scoring.score(urgency: .low, pocket: .backports, component: .multiverse, archive: .private)
        #expect(privateBackport > Scoring.score(urgency: .emergency, pocket: .security, component: .partner))
    }
}
