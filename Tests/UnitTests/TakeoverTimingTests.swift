import BuilddMasterKit
import Postgres
import Testing

/// When a master is cut off - from the broker or from the database - another master must take its status
/// shards before the leases of the builders they carry run out, or every one of those builds is rebuilt.
@Suite(.timeLimit(.minutes(1))) struct TakeoverTimingTests {
    static let leases = [5, 6, 9, 10, 15, 30, 60, 120, 600]

    /// The broker notices a master is gone after about two missed heartbeats.
    @Test func theBrokerNoticesAMasterCutOffFromItWithinTheLease() {
        for lease in Self.leases {
            let heartbeat = MasterDaemon.brokerHeartbeat(leaseSeconds: lease)
            #expect(heartbeat * 2 < .seconds(lease), "lease \(lease) s: heartbeat \(heartbeat)")
            #expect(heartbeat >= .seconds(2) && heartbeat <= .seconds(10), "lease \(lease) s: heartbeat \(heartbeat)")
        }
    }

    @Test func aMasterCutOffFromTheDatabaseStepsDownWithinTheLease() {
        for lease in Self.leases {
            let after = StatusShardIntake.stepDownAfter(leaseSeconds: lease)
            #expect(after < .seconds(lease) && after >= .seconds(1), "lease \(lease) s: steps down after \(after)")
        }
    }

    /// An upload's admission waits for the database at most the master's patience, then answers (503): the
    /// call that did not answer goes on in the background.
    @Test func aDatabaseCallThatDoesNotAnswerIsLeftAfterThePatience() async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let slow = try await StatusShardIntake.answer(within: .milliseconds(200)) {
            try await Task.sleep(for: .seconds(5))
            return 1
        }
        #expect(slow == nil)
        #expect(clock.now - started < .seconds(2), "left after \(clock.now - started)")
        let fast = try await StatusShardIntake.answer(within: .seconds(5)) { 7 }
        #expect(fast == 7)
        struct Refused: Error {}
        await #expect(throws: Refused.self) {
            _ = try await StatusShardIntake.answer(within: .seconds(5)) { () async throws -> Int in throw Refused() }
        }
    }

    /// A master stepping down over and over (the database answers, and fails every event write) waits longer
    /// each time before it takes the shards back; one whose last step-down was a lease ago waits a second.
    @Test func aMasterThatKeepsSteppingDownHoldsDownLongerEachTime() {
        #expect((1...8).map { StatusShardIntake.holdDown(afterStepDownsInARow: $0) }
                == [1, 2, 4, 8, 16, 30, 30, 30].map { Duration.seconds($0) })
        let intake = StatusShardIntake(leaseSeconds: 9)  // patience 3 s: a flap is a step-down within 9 s of resuming
        let start = ContinuousClock.now
        var now = start
        #expect(intake.stepDown(refusedByTheDatabase: true, at: now))
        #expect(!intake.stepDown(refusedByTheDatabase: true, at: now), "down already")
        #expect(intake.holdDown.stepDownsInARow == 1 && intake.holdDown.wait == .seconds(1))
        #expect(!intake.holdDownIsOver(at: now + .milliseconds(900)) && intake.holdDownIsOver(at: now + .seconds(1)))
        // Consuming again, and down again 4 s later, three times: 2, then 4, then 8 s.
        for expected in [2, 4, 8] {
            now += intake.holdDown.wait
            #expect(intake.resume(at: now))
            now += .seconds(4)
            #expect(intake.stepDown(refusedByTheDatabase: true, at: now))
            #expect(intake.holdDown.wait == .seconds(expected), "after a flap: \(intake.holdDown)")
            #expect(!intake.holdDownIsOver(at: now + .seconds(expected) - .milliseconds(1)))
            #expect(intake.holdDownIsOver(at: now + .seconds(expected)))
        }
        // Consuming for longer than a lease: the next step-down is a first one again.
        now += .seconds(8)
        #expect(intake.resume(at: now))
        #expect(!intake.resume(at: now), "consuming already")
        now += .seconds(9)
        #expect(intake.stepDown(refusedByTheDatabase: true, at: now))
        #expect(intake.holdDown.stepDownsInARow == 1 && intake.holdDown.wait == .seconds(1))
        // Cut off again and again, soon after each heal: each outage is new, and each ends in a second.
        for _ in 0..<4 {
            now += .seconds(1)
            #expect(intake.resume(at: now))
            now += .seconds(2)
            #expect(intake.stepDown(refusedByTheDatabase: false, at: now))
            #expect(intake.holdDown.stepDownsInARow == 1 && intake.holdDown.wait == .seconds(1))
        }
    }

    /// What the database answers with (out of disk, say) counts towards holding down; a link that failed or
    /// a server restarting does not.
    @Test func onlyTheDatabasesOwnRefusalsCountTowardsHoldingDown() {
        #expect(EventConsumer.refusedByTheDatabase(PostgresError(.server, sqlState: "53100", message: "could not extend file")))
        #expect(EventConsumer.refusedByTheDatabase(PostgresError(.server, sqlState: "58030", message: "could not write")))
        #expect(EventConsumer.refusedByTheDatabase(PostgresError(.server, sqlState: "55P03", message: "lock timeout")))
        #expect(!EventConsumer.refusedByTheDatabase(PostgresError(.connection, message: "server closed the connection")))
        #expect(!EventConsumer.refusedByTheDatabase(PostgresError(.server, sqlState: "08006", message: "connection failure")))
        #expect(!EventConsumer.refusedByTheDatabase(PostgresError(.server, sqlState: "57P01", message: "terminating connection")))
        #expect(!EventConsumer.refusedByTheDatabase(CancellationError()))
    }

    @Test func aMastersPatienceIsAThirdOfItsLease() {
        #expect(StatusShardIntake(leaseSeconds: 30).patience == .seconds(10))
        #expect(StatusShardIntake(leaseSeconds: 5).patience == .seconds(1))
    }
}
