import BuilddCore
import Testing

/// The dispatch contract and leases as a value, driven by a test clock.
@Suite(.timeLimit(.minutes(1))) struct BuildLifecycleTests {
    /// A clock the test moves by hand.
    struct TestClock {
        var now: Double = 1_000
        mutating func advance(_ seconds: Double) { now += seconds }
    }

    let lease = 30.0
    let builder = 7

    func running(_ clock: TestClock, attempt: Int32 = 1) -> BuildLifecycle {
        var machine = BuildLifecycle(state: .waiting)
        _ = machine.claim(attempt: attempt, now: clock.now)
        _ = machine.accepted(attempt: attempt, builder: builder, builderUsable: true, builderBusy: false,
                             now: clock.now, lease: lease)
        return machine
    }

    @Test func aClaimNobodyAcceptsIsReclaimedAfterTheTimeout() {
        var clock = TestClock()
        var machine = BuildLifecycle(state: .waiting)
        #expect(machine.claim(attempt: 1, now: clock.now) == .start)
        clock.advance(29)
        #expect(machine.tick(now: clock.now, acceptTimeout: 30) == .ignore("nothing due"))
        clock.advance(2)
        #expect(machine.tick(now: clock.now, acceptTimeout: 30) == .reclaim)
        #expect(machine.state == .waiting)
        // The next claim is a new attempt; the old one is fenced off.
        #expect(machine.claim(attempt: 2, now: clock.now) == .start)
        #expect(machine.accepted(attempt: 1, builder: builder, builderUsable: true, builderBusy: false,
                                 now: clock.now, lease: lease) == .abort(attempt: 1, reason: "attempt 1 is not current"))
        #expect(machine.accepted(attempt: 2, builder: builder, builderUsable: true, builderBusy: false,
                                 now: clock.now, lease: lease) == .start)
        #expect(machine.accepted(attempt: 2, builder: builder, builderUsable: true, builderBusy: false,
                                 now: clock.now, lease: lease) == .ignore("accepted repeated"))
    }

    @Test func aBusyOrDisabledBuilderIsToldToAbort() {
        var machine = BuildLifecycle(state: .dispatched(attempt: 1, since: 0))
        #expect(machine.accepted(attempt: 1, builder: builder, builderUsable: true, builderBusy: true, now: 1, lease: lease)
            == .abort(attempt: 1, reason: "builder already runs another build"))
        #expect(machine.accepted(attempt: 1, builder: builder, builderUsable: false, builderBusy: false, now: 1, lease: lease)
            == .abort(attempt: 1, reason: "builder is disabled or in manual mode"))
        #expect(machine.state == .dispatched(attempt: 1, since: 0))
    }

    @Test func heartbeatsKeepALongBuildAliveForADay() {
        var clock = TestClock()
        var machine = running(clock)
        // A 24-hour build that prints nothing: the agent's heartbeats come every 5 s regardless of output.
        for _ in 0..<(24 * 3600 / 5) {
            clock.advance(5)
            #expect(machine.tick(now: clock.now, acceptTimeout: 30) == .ignore("nothing due"))
            #expect(machine.heartbeat(attempt: 1, builder: builder, now: clock.now, lease: lease) == .renew)
        }
        #expect(machine.finished(attempt: 1, builder: builder, result: .ok) == .finish(.fullyBuilt, builderFailure: false))
    }

    @Test func aSilentAgentLosesItsLease() {
        var clock = TestClock()
        var machine = running(clock)
        clock.advance(lease + 0.5)
        #expect(machine.tick(now: clock.now, acceptTimeout: 30) == .countFailure("lease expired: no heartbeat"))
        machine.failureCounted(retry: true)
        #expect(machine.state == .waiting)
    }

    @Test func eventsOfAnOldAttemptChangeNothing() {
        let clock = TestClock()
        var machine = running(clock, attempt: 2)
        let before = machine
        #expect(machine.heartbeat(attempt: 1, builder: builder, now: clock.now, lease: lease)
            == .abort(attempt: 1, reason: "attempt 1 is not current"))
        #expect(machine.finished(attempt: 1, builder: builder, result: .ok)
            == .ignore("finished for an attempt that is not current"))
        #expect(machine.finished(attempt: 2, builder: builder + 1, result: .ok)
            == .ignore("finished for an attempt that is not current"))
        #expect(machine == before)
        #expect(machine.finished(attempt: 2, builder: builder, result: .packageFail) == .finish(.failedToBuild, builderFailure: false))
        #expect(machine.state == .done)
        // A repeated finished, or a heartbeat that crossed it, changes nothing and asks for no abort.
        #expect(machine.finished(attempt: 2, builder: builder, result: .ok) == .ignore("finished for an attempt that is not current"))
        #expect(machine.heartbeat(attempt: 2, builder: builder, now: clock.now, lease: lease, endedAttempt: (2, builder))
            == .ignore("late heartbeat of a finished attempt"))
    }

    @Test func missingFilesAndInfrastructureResultsAreCountedFailures() {
        let clock = TestClock()
        var machine = running(clock)
        #expect(machine.finished(attempt: 1, builder: builder, result: .ok, filesMissing: ["a.deb"])
            == .countFailure("result files missing or different from the upload: a.deb"))
        #expect(machine.finished(attempt: 1, builder: builder, result: .givenBack) == .countFailure("GIVENBACK"))
        #expect(machine.finished(attempt: 1, builder: builder, result: .depFail) == .finish(.manualDepWait, builderFailure: false))
    }

    @Test func cancellingARunningBuildGivesTheBuilderUntilTheDeadline() {
        var clock = TestClock()
        var machine = running(clock)
        #expect(machine.cancel(now: clock.now, deadline: 180) == .requestAbort)
        #expect(machine.cancel(now: clock.now, deadline: 180) == .ignore("already cancelling"))
        clock.advance(100)
        // Heartbeats do not move the deadline.
        #expect(machine.heartbeat(attempt: 1, builder: builder, now: clock.now, lease: 1_000) == .renew)
        #expect(machine.state == .cancelling(attempt: 1, builder: builder, deadline: 1_180))
        clock.advance(81)
        #expect(machine.tick(now: clock.now, acceptTimeout: 30) == .finish(.cancelled, builderFailure: true))
    }

    @Test func anAbortConfirmedInTimeEndsCancelled() {
        let clock = TestClock()
        var machine = running(clock)
        _ = machine.cancel(now: clock.now, deadline: 180)
        #expect(machine.finished(attempt: 1, builder: builder, result: .aborted) == .finish(.cancelled, builderFailure: false))
        var waiting = BuildLifecycle(state: .waiting)
        #expect(waiting.cancel(now: 0, deadline: 180) == .finish(.cancelled, builderFailure: false))
    }

    @Test func aBuilderThatFailsWhileCancellingEndsTheBuildCancelledAndIsCounted() {
        let clock = TestClock()
        var machine = running(clock)
        _ = machine.cancel(now: clock.now, deadline: 180)
        #expect(machine.finished(attempt: 1, builder: builder, result: .builderFail) == .finish(.cancelled, builderFailure: true))
        #expect(machine.state == .done)
    }

    @Test func aBuilderThatComesBackIdleLosesItsBuild() {
        var machine = running(TestClock())
        #expect(machine.builderIdle(builder: builder + 1) == .ignore("not running on this builder"))
        #expect(machine.builderIdle(builder: builder) == .countFailure("builder reported idle while building"))
    }
}
