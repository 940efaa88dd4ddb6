import BuilddCore
import BuilddShared
import Testing

/// The lifecycle core over rows in memory: reports applied in order, the clock, the failure ledger and
/// availability, driven by a clock the test moves by hand, with no database.
@Suite(.timeLimit(.minutes(1))) struct LifecycleCoreTests {
    /// A clock the test moves by hand; each batch reads it once, as the store reads the database's.
    struct ManualClock {
        var now: Double = 10_000
        mutating func advance(_ seconds: Double) { now += seconds }
    }

    static let lease = 30.0
    /// An upload key's declared digest.
    static let key = String(repeating: "ab", count: 32)

    static func builder(_ id: Int, _ name: String, user: String? = nil, kind: BuilderKind = .agent,
                        failures: Int = 0, ok: Bool = true) -> BuilderRecord {
        BuilderRecord(id: id, name: name, kind: kind, brokerUser: user, active: true, manual: false, session: "s-\(name)",
                      lastSeq: 0, agentState: .idle, cleanStatus: .clean,
                      standing: BuilderStanding(failures: failures, ok: ok, notes: nil))
    }

    static func dispatched(_ id: Int64, attempt: Int32 = 1, at: Double, failures: Int = 0) -> BuildRecord {
        BuildRecord(id: id, attempt: attempt, status: .needsBuild, builderID: nil,
                    job: JobStanding(failures: failures, notes: nil), result: nil, logName: nil, logSHA256: nil,
                    startedAt: nil, queue: QueueRecord(.dispatched(since: at, to: nil)))
    }

    static func report(_ builder: String, _ seq: Int64, _ event: BuilderReport.Event, message: String? = nil,
                       user: String? = nil) -> BuilderReport {
        BuilderReport(builder: builder, session: "s-\(builder)", seq: seq, event: event, message: message,
                      sender: .agent(user: user))
    }

    static func ref(_ build: Int64, _ attempt: Int32 = 1) -> AttemptRef { AttemptRef(build: build, attempt: attempt) }

    @Test func oneBatchTakesTwoBuildersFromAcceptedToFullyBuiltInOrder() {
        let clock = ManualClock()
        var core = LifecycleCore(builders: [Self.builder(1, "a1"), Self.builder(2, "a2")],
                                 builds: [Self.dispatched(10, at: clock.now - 0.5), Self.dispatched(11, at: clock.now - 0.25)],
                                 now: clock.now, leaseSeconds: Self.lease)
        let outcomes = [
            Self.report("a1", 1, .accepted(Self.ref(10), uploadKey: Self.key)),
            Self.report("a2", 1, .accepted(Self.ref(11), uploadKey: Self.key)),
            Self.report("a1", 2, .finished(Self.ref(10), .ok, files: [], log: nil)),
            Self.report("a2", 2, .finished(Self.ref(11), .packageFail, files: [], log: nil), message: "make failed"),
        ].map { core.apply($0) }
        #expect(outcomes == [.applied("build 10 attempt 1 started on a1"), .applied("build 11 attempt 1 started on a2"),
                             .applied("build 10 FULLYBUILT"), .applied("build 11 FAILEDTOBUILD")])
        #expect(core.builds[10]?.status == .fullyBuilt && core.builds[10]?.queue == nil && core.builds[10]?.finished == .now)
        #expect(core.builds[11]?.status == .failedToBuild && core.builds[11]?.job.notes == "make failed")
        #expect(core.dequeued == [10, 11])
        #expect(core.builders[1]?.agentState == .idle && core.builders[1]?.cleanStatus == .clean)
        #expect(core.builders[1]?.lastSeq == 2 && core.builders[1]?.seen == true)
        #expect(core.history.map { "\($0.build) \($0.status.rawValue)" }
                == ["10 BUILDING", "11 BUILDING", "10 GATHERING", "10 FULLYBUILT", "11 FAILEDTOBUILD"])
        #expect(core.dispatchLatencies == [0.5, 0.25])
        #expect(core.changedBuilds.map(\.id) == [10, 11] && core.changedBuilders.map(\.id) == [1, 2])
    }

    @Test func aReplayIsDroppedByItsSessionAndSequence() {
        var core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [Self.dispatched(10, at: 0)],
                                 now: 1, leaseSeconds: Self.lease)
        #expect(core.apply(Self.report("a1", 5, .accepted(Self.ref(10), uploadKey: Self.key))) == .applied("build 10 attempt 1 started on a1"))
        #expect(core.apply(Self.report("a1", 5, .accepted(Self.ref(10), uploadKey: Self.key))) == .ignored("replayed event 5 of session s-a1"))
        #expect(core.apply(Self.report("a1", 4, .heartbeat(.idle, current: nil, logTail: nil)))
                == .ignored("replayed event 4 of session s-a1"))
        // The same numbers from a new process (another session) are not replays.
        var fresh = Self.report("a1", 1, .hello(.idle, current: nil))
        fresh.session = "restarted"
        #expect(core.apply(fresh) == .applied("requeued 1 lost build(s)"))
        #expect(core.builds[10]?.queue?.state == .waiting && core.builds[10]?.job.failures == 1)
    }

    @Test func whoMaySpeakForABuilder() {
        var core = LifecycleCore(builders: [Self.builder(1, "a1", user: "agent-a1"), Self.builder(2, "x1", kind: .xmlrpc)],
                                 builds: [], now: 1, leaseSeconds: Self.lease)
        #expect(core.apply(Self.report("nobody", 1, .hello(.idle, current: nil))) == .rejected("unknown builder nobody"))
        #expect(core.apply(Self.report("a1", 1, .hello(.idle, current: nil), user: "mallory"))
                == .rejected("user mallory may not speak for builder a1"))
        #expect(core.apply(Self.report("x1", 1, .hello(.idle, current: nil))) == .rejected("builder x1 is not an agent"))
        var legacy = Self.report("a1", 1, .hello(.idle, current: nil))
        legacy.sender = .legacyAdapter
        #expect(core.apply(legacy) == .rejected("builder a1 is not an XML-RPC builder"))
        #expect(core.changedBuilders.isEmpty && core.history.isEmpty)
    }

    @Test func aBuilderMovesFromALostBuildToANewOneWithinABatch() {
        var core = LifecycleCore(builders: [Self.builder(1, "a1")],
                                 builds: [Self.dispatched(10, at: 0), Self.dispatched(11, at: 0)], now: 1,
                                 leaseSeconds: Self.lease)
        _ = core.apply(Self.report("a1", 1, .accepted(Self.ref(10), uploadKey: Self.key)))
        // Busy with 10: an accept of 11 is refused with an abort.
        #expect(core.apply(Self.report("a1", 2, .accepted(Self.ref(11), uploadKey: Self.key)))
                == .abort(buildID: 11, attempt: 1, reason: "build 11: builder already runs another build"))
        // It restarted and forgot 10: that build is lost and requeued; now it may take 11.
        _ = core.apply(Self.report("a1", 3, .hello(.idle, current: nil)))
        #expect(core.apply(Self.report("a1", 4, .accepted(Self.ref(11), uploadKey: Self.key))) == .applied("build 11 attempt 1 started on a1"))
        #expect(core.builds[10]?.queue?.state == .waiting && core.builds[10]?.queue?.dispatchCleared == true)
        #expect(core.builds[11]?.queue?.state == .running && core.builds[11]?.queue?.builderID == 1)
    }

    @Test func aHeartbeatRenewsTheLeaseAndKeepsTheTail() {
        var clock = ManualClock()
        var core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [Self.dispatched(10, at: clock.now)],
                                 now: clock.now, leaseSeconds: Self.lease)
        _ = core.apply(Self.report("a1", 1, .accepted(Self.ref(10), uploadKey: Self.key)))
        #expect(core.builds[10]?.queue?.leaseUntil == clock.now + Self.lease)
        clock.advance(20)
        var later = LifecycleCore(builders: Array(core.builders.values), builds: Array(core.builds.values),
                                  now: clock.now, leaseSeconds: Self.lease)
        #expect(later.apply(Self.report("a1", 2, .heartbeat(.building, current: Self.ref(10), logTail: "line")))
                == .applied("lease renewed"))
        #expect(later.builds[10]?.queue?.leaseUntil == clock.now + Self.lease)
        #expect(later.builds[10]?.queue?.logTail == .some("line"))
        // A renewal changes the queue entry, not the build's row: only the entry is written.
        #expect(later.changedBuilds.map(\.id) == [10] && later.changedBuildRows.isEmpty)
        // A heartbeat of an attempt that is not current asks the agent to abort.
        #expect(later.apply(Self.report("a1", 3, .heartbeat(.building, current: Self.ref(10, 7), logTail: nil)))
                == .abort(buildID: 10, attempt: 7, reason: "build 10: attempt 7 is not current"))
    }

    /// The clock: a lease that ran out is an infrastructure failure of the job and the builder, judged by
    /// the ledger; the third fails the job; five in a row break the builder.
    @Test func expiredLeasesAreCountedByTheLedger() {
        var clock = ManualClock()
        var builder = Self.builder(1, "a1", failures: 4)
        builder.agentState = .building
        var build = Self.dispatched(10, at: clock.now, failures: 0)
        build.queue = QueueRecord(.running(builder: 1, leaseUntil: clock.now + Self.lease))
        build.builderID = 1
        build.status = .building
        clock.advance(Self.lease)
        var core = LifecycleCore(builders: [builder], builds: [build], now: clock.now, leaseSeconds: Self.lease)
        #expect(core.expireLeases().isEmpty)  // not yet: the lease runs until its very end
        clock.advance(0.001)
        core = LifecycleCore(builders: [builder], builds: [build], now: clock.now, leaseSeconds: Self.lease)
        #expect(core.expireLeases().map(\.buildID) == [10])
        #expect(core.builds[10]?.queue?.state == .waiting && core.builds[10]?.status == .needsBuild)
        #expect(core.builds[10]?.job.failures == 1)
        // The builder's fifth failure in a row (4 + 1 >= 5, and the job failed less): broken.
        #expect(core.builders[1]?.standing.ok == false && core.builders[1]?.standing.failures == 5)
        #expect(core.builders[1]?.standing.notes?.hasPrefix("failed 5 times in a row, last: lease expired") == true)
        #expect(core.history.last?.message?.hasPrefix("retrying: lease expired: no heartbeat (a1)") == true)

        // A job that failed twice before fails on its third, and the builder is forgiven this one.
        var tired = build
        tired.job.failures = 2
        var fresh = Self.builder(1, "a1", failures: 0)
        fresh.agentState = .building
        core = LifecycleCore(builders: [fresh], builds: [tired], now: clock.now, leaseSeconds: Self.lease)
        _ = core.expireLeases()
        #expect(core.builds[10]?.status == .failedToBuild && core.builds[10]?.queue == nil)
        #expect(core.builds[10]?.job.notes?.hasPrefix("failed 3 times, last: lease expired") == true)
        #expect(core.builders[1]?.standing == BuilderStanding(failures: 0, ok: true, notes: nil))
    }

    @Test func cancellingAsksTheBuilderAndItsDeadlineEndsIt() {
        var clock = ManualClock()
        var build = Self.dispatched(10, at: clock.now)
        build.queue = QueueRecord(.running(builder: 1, leaseUntil: clock.now + 30))
        build.status = .building
        build.builderID = 1
        var core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [build, Self.dispatched(11, at: clock.now)],
                                 now: clock.now, leaseSeconds: Self.lease)
        #expect(core.cancel(11, deadlineSeconds: 180, by: "alice") == .cancelled)
        #expect(core.builds[11]?.status == .cancelled && core.builds[11]?.queue == nil)
        #expect(core.history.last?.actor == "alice" && core.history.last?.status == .cancelled)
        #expect(core.cancel(10, deadlineSeconds: 180) == .cancelling)
        #expect(core.history.last?.actor == nil && core.history.last?.status == .cancelling)
        #expect(core.builds[10]?.status == .cancelling && core.builds[10]?.queue?.state == .cancelling)
        #expect(core.cancel(10, deadlineSeconds: 180) == .cancelling)
        #expect(core.cancel(11, deadlineSeconds: 180) == .notCancellable(.cancelled))
        #expect(core.cancel(99, deadlineSeconds: 180) == .notFound)
        clock.advance(181)
        var late = LifecycleCore(builders: Array(core.builders.values), builds: Array(core.builds.values),
                                 now: clock.now, leaseSeconds: Self.lease)
        #expect(late.expireLeases().map(\.buildID) == [10])
        #expect(late.builds[10]?.status == .cancelled)
        // Not confirming an abort is the builder's failure alone, and a line of its history.
        #expect(late.builders[1]?.standing.failures == 1 && late.builds[10]?.job.failures == 0)
        #expect(late.builderHistory == [BuilderHistoryEntry(builder: "a1", kind: .failure, actor: nil,
                                                            reason: "1 in a row: did not confirm an abort")])
    }

    @Test func aRetryQueuesAFailedBuildAgainWithAFreshLedger() {
        var failed = Self.dispatched(10, attempt: 3, at: 0, failures: 3)
        failed.queue = nil
        failed.status = .failedToBuild
        failed.result = .builderFail
        failed.job.notes = "failed 3 times"
        var running = Self.dispatched(11, at: 0)
        running.status = .building
        var unscored = failed
        unscored = BuildRecord(id: 13, attempt: 1, status: .failedToBuild, builderID: nil, job: failed.job, result: nil,
                               logName: nil, logSHA256: nil, startedAt: nil, queue: nil)
        // A security upload of main, high urgency: 15 + 4500 + 1000 (Launchpad's scores).
        failed.scoring = BuildScoring(processor: 7, urgency: .high, pocket: .security, component: .main, archive: .primary)
        var core = LifecycleCore(builders: [], builds: [failed, running, unscored], now: 1, leaseSeconds: Self.lease)
        #expect(core.retry(11) == .notRetryable(.building))
        #expect(core.retry(12) == .notFound)
        #expect(core.retry(13) == .unscored)
        #expect(core.retry(10) == .queued)
        let retried = core.builds[10]
        #expect(retried?.status == .needsBuild && retried?.queue?.state == .waiting)
        #expect(retried?.job == JobStanding(failures: 0, notes: nil) && retried?.result == nil)
        #expect(retried?.enqueued == BuildRecord.Enqueued(processor: 7, score: 5515) && retried?.finished == .clear)
        #expect(core.rescored.isEmpty, "an entry inserted by the retry is not also updated")
        #expect(retried?.attempt == 3)  // attempts go on: the next claim is attempt 4
        #expect(core.history.last == HistoryEntry(build: 10, status: .needsBuild, attempt: 3, builder: nil,
                                                  message: "retried from FAILEDTOBUILD"))
        #expect(core.retry(10) == .notRetryable(.needsBuild))
    }

    @Test func filesThatDoNotMatchTheUploadAreAnInfrastructureFailure() {
        let good = FileDigest(name: "hello.deb", sha256: String(repeating: "a", count: 64), size: 10)
        var other = good
        other.size = 11
        var build = Self.dispatched(10, at: 0)
        build.queue = QueueRecord(.running(builder: 1, leaseUntil: 100))
        var core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [build],
                                 storedFiles: [Self.ref(10): [good]], now: 1, leaseSeconds: Self.lease)
        #expect(core.apply(Self.report("a1", 1, .finished(Self.ref(10), .ok, files: [other], log: nil)))
                == .applied("build 10 OK, counted"))
        #expect(core.builds[10]?.job.notes?.contains("result files missing or different from the upload: hello.deb") == true)
        core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [build], storedFiles: [Self.ref(10): [good]],
                             now: 1, leaseSeconds: Self.lease)
        #expect(core.apply(Self.report("a1", 1, .finished(Self.ref(10), .ok, files: [good], log: nil)))
                == .applied("build 10 FULLYBUILT"))
    }

    @Test func theLedgerOfABuilderAlone() {
        var standing = BuilderStanding(failures: 0, ok: true, notes: nil)
        for _ in 1..<FailureThresholds.builder { #expect(standing.countFailure("x") == false) }
        #expect(standing.countIdleFault("fifth") == true && standing.notes == "fifth" && standing.idleFaults == 1)
        standing.forgiveIdleFaults()
        #expect(standing.failures == FailureThresholds.builder)  // a broken builder is not forgiven by polls
        standing.reset()
        #expect(standing == BuilderStanding(failures: 0, ok: true, notes: nil))
        // Two failures with builds, then two faults while idle: an answer forgives the faults, not the failures.
        standing.countFailure("a")
        standing.countFailure("b")
        standing.countIdleFault("c")
        #expect(standing.countIdleFault("d") == false && standing.failures == 4 && standing.idleFaults == 2)
        standing.forgiveIdleFaults()
        #expect(standing.failures == 2 && standing.idleFaults == 0 && standing.notes == nil)
        standing.forgiveIdleFaults()
        #expect(standing.failures == 2, "what was forgiven is not forgiven twice")
    }

    /// Wire events become typed reports only with the fields their kind needs.
    @Test func typedReportsNeedTheirFields() throws {
        let accepted = AgentEvent(kind: .accepted, builder: "a1", session: "s", seq: 1, buildID: 3, attempt: 2,
                                  uploadKeySHA256: Self.key)
        #expect(try accepted.report(user: "u").event == .accepted(AttemptRef(build: 3, attempt: 2), uploadKey: Self.key))
        #expect(throws: WireError.self) {
            try AgentEvent(kind: .accepted, builder: "a1", session: "s", seq: 1, buildID: 3,
                           uploadKeySHA256: Self.key).report(user: nil)
        }
        // An accept that declares no upload key, or not a digest, would leave the attempt's files open to
        // whoever read its job: refused.
        for key in [nil, "", "AB" + String(Self.key.dropFirst(2)), String(Self.key.dropLast()), Self.key + "0"] {
            #expect(throws: WireError.self, "key \(key ?? "none")") {
                try AgentEvent(kind: .accepted, builder: "a1", session: "s", seq: 1, buildID: 3, attempt: 2,
                               uploadKeySHA256: key).report(user: nil)
            }
        }
        #expect(throws: WireError.self) {
            try AgentEvent(kind: .finished, builder: "a1", session: "s", seq: 1, buildID: 3, attempt: 1).report(user: nil)
        }
        #expect(throws: WireError.self) {
            try AgentEvent(kind: .heartbeat, builder: "a1", session: "s", seq: 1).report(user: nil)
        }
    }

    /// One definition of availability, as the pages, the scanner and the dispatcher read it.
    @Test(arguments: BuilderAvailabilityCases.all)
    func availability(_ example: BuilderAvailabilityCases.Case) {
        #expect(BuilderAvailability.of(example.facts, silentAfterSeconds: 20) == example.expected)
    }

    /// A builder in manual mode gets no job; one it accepts anyway (taken before it was put in manual mode) is
    /// refused, and the build waits for another builder.
    @Test func aBuilderInManualModeIsNeverStarted() {
        var manual = BuilderRecord(id: 1, name: "m1", kind: .agent, brokerUser: nil, active: true, manual: true,
                                   session: "s-m1", lastSeq: 0, agentState: .idle, cleanStatus: .clean,
                                   standing: BuilderStanding(failures: 0, ok: true, notes: nil))
        var core = LifecycleCore(builders: [manual], builds: [Self.dispatched(10, at: 0)], now: 1, leaseSeconds: Self.lease)
        let outcome = core.apply(Self.report("m1", 1, .accepted(Self.ref(10), uploadKey: Self.key)))
        #expect(outcome == .abort(buildID: 10, attempt: 1, reason: "build 10: builder is disabled or in manual mode"))
        #expect(core.builds[10]?.status == .needsBuild && core.builds[10]?.queue?.state == .dispatched)
        manual = BuilderRecord(id: 1, name: "m1", kind: .agent, brokerUser: nil, active: true, manual: false,
                               session: "s-m1", lastSeq: 0, agentState: .idle, cleanStatus: .clean,
                               standing: BuilderStanding(failures: 0, ok: true, notes: nil))
        core = LifecycleCore(builders: [manual], builds: [Self.dispatched(10, at: 0)], now: 1, leaseSeconds: Self.lease)
        #expect(core.apply(Self.report("m1", 1, .accepted(Self.ref(10), uploadKey: Self.key)))
                == .applied("build 10 attempt 1 started on m1"))
    }

    /// The claim's release, the accept timeout and the abort resend are the core's: a release applies only to
    /// the claim it names; a claim older than the timeout waits again with no builder, time or key; a
    /// cancelling build's builder is told again only after the resend interval.
    @Test func claimsAreReleasedAndReclaimedAndAbortsResentByTheCore() {
        var addressed = Self.dispatched(11, attempt: 2, at: 100)
        addressed.queue?.phase = .dispatched(since: 100, to: 1)
        var cancelling = Self.dispatched(12, at: 0)
        cancelling.status = .cancelling
        cancelling.queue = QueueRecord(.cancelling(builder: 1, deadline: 500))
        var core = LifecycleCore(builders: [Self.builder(1, "a1")],
                                 builds: [Self.dispatched(10, attempt: 2, at: 100), addressed, cancelling],
                                 now: 120, leaseSeconds: Self.lease)
        let older = core.releaseClaim(10, attempt: 1), current = core.releaseClaim(10, attempt: 2)
        #expect(!older, "an older attempt's release changes nothing")
        #expect(current)
        #expect(core.builds[10]?.queue?.state == .waiting && core.builds[10]?.queue?.dispatchCleared == true)
        #expect(core.builds[10]?.attempt == 2)
        let cancelled = core.releaseClaim(12, attempt: 1)
        #expect(!cancelled, "a cancelling build is not a claim")
        #expect(core.reclaimExpiredClaims(acceptTimeout: 30).isEmpty, "20 s old: not yet")
        #expect(core.reclaimExpiredClaims(acceptTimeout: 19) == [11])
        #expect(core.builds[11]?.queue?.builderID == nil && core.builds[11]?.queue?.dispatchedAt == nil)
        #expect(core.builds[12]?.queue?.state == .cancelling)
        let first = core.abortsDue()
        #expect(first.map(\.buildID) == [12] && first.first?.builder == "a1" && first.first?.attempt == 1)
        #expect(core.builds[12]?.queue?.abortSent == .now && core.builds[12]?.queue?.abortSentAt == 120)
        #expect(core.abortsDue().isEmpty, "just told")
        var told = cancelling
        told.queue?.abortSentAt = 120 - Double(BuildLifecycle.abortResendSeconds) + 1
        core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [told], now: 120, leaseSeconds: Self.lease)
        #expect(core.abortsDue().isEmpty, "told within the resend interval")
        told.queue?.abortSentAt = 120 - Double(BuildLifecycle.abortResendSeconds) - 1
        core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [told], now: 120, leaseSeconds: Self.lease)
        #expect(core.abortsDue().map(\.buildID) == [12])
    }

    /// A queue entry is one phase with exactly its facts: stored columns that do not make one are refused (the
    /// store names the row) rather than read with made-up defaults, and the lifecycle is made from the phase.
    @Test func aQueueEntryIsOnePhaseAndColumnsThatMakeNoneAreRefused() {
        #expect(QueueRecord.Phase.stored(state: .running, builder: nil, dispatchedAt: 1, leaseUntil: 30) == nil)
        #expect(QueueRecord.Phase.stored(state: .running, builder: 2, dispatchedAt: 1, leaseUntil: nil) == nil)
        #expect(QueueRecord.Phase.stored(state: .cancelling, builder: nil, dispatchedAt: nil, leaseUntil: 9) == nil)
        #expect(QueueRecord.Phase.stored(state: .dispatched, builder: 3, dispatchedAt: nil, leaseUntil: nil) == nil)
        #expect(QueueRecord.Phase.stored(state: .dispatched, builder: 3, dispatchedAt: 5, leaseUntil: nil)
                == .dispatched(since: 5, to: 3))
        #expect(QueueRecord.Phase.stored(state: .waiting, builder: nil, dispatchedAt: nil, leaseUntil: nil) == .waiting)
        let running = QueueRecord(.running(builder: 2, leaseUntil: 40))
        #expect(running.state == .running && running.builderID == 2 && running.leaseUntil == 40 && running.dispatchedAt == nil)
        var build = Self.dispatched(10, attempt: 4, at: 0)
        build.queue = running
        #expect(build.lifecycle.state == .running(attempt: 4, builder: 2, leaseUntil: 40))
        build.queue = QueueRecord(.cancelling(builder: 2, deadline: 99))
        #expect(build.lifecycle.state == .cancelling(attempt: 4, builder: 2, deadline: 99))
        build.queue = nil
        #expect(build.lifecycle.state == .done)
    }

    /// An operator's score replaces the computed one; clearing it gives back the base plus the age bonus earned.
    @Test func aRescoreIsTheCoresAndClearingItRestoresTheAgeBonus() {
        var waiting = Self.dispatched(10, at: 0)
        waiting.queue = QueueRecord(.waiting)
        waiting.queue?.score = QueueScore(base: 2510, last: 2510, manual: false, queuedAt: 0)
        var done = Self.dispatched(11, at: 0)
        done.queue = nil
        done.status = .fullyBuilt
        var core = LifecycleCore(builders: [], builds: [waiting, done], now: 3601, leaseSeconds: Self.lease)
        #expect(core.rescore(10, to: 9000, by: "ops") == .scored(9000))
        #expect(core.builds[10]?.queue?.score == QueueScore(base: 2510, last: 9000, manual: true, queuedAt: 0))
        #expect(core.rescore(10, to: nil) == .scored(2530), "waited over an hour: +20")
        #expect(core.builds[10]?.queue?.score?.manual == false)
        #expect(core.rescore(11, to: 1) == .notQueued(.fullyBuilt))
        #expect(core.rescore(12, to: 1) == .notFound)
        #expect(core.rescored.map(\.buildID) == [10])
        #expect(core.history.map(\.message) == ["rescored to 9000", "score back to the computed 2530"])
        #expect(core.history.first?.actor == "ops")
    }

    /// Every status change a batch makes is one the graph allows; a forbidden one is named, and the store writes
    /// nothing of that batch.
    @Test func aBatchNamesEveryStatusChangeTheGraphForbids() {
        var core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [Self.dispatched(10, at: 0)], now: 1,
                                 leaseSeconds: Self.lease)
        _ = core.apply(Self.report("a1", 1, .accepted(Self.ref(10), uploadKey: Self.key)))
        _ = core.apply(Self.report("a1", 2, .finished(Self.ref(10), .ok, files: [], log: nil)))
        #expect(core.builds[10]?.status == .fullyBuilt && core.forbiddenTransitions.isEmpty)
        var built = Self.dispatched(11, at: 0)
        built.status = .fullyBuilt
        built.queue = nil
        core = LifecycleCore(builders: [], builds: [built], now: 1, leaseSeconds: Self.lease)
        #expect(core.retry(11) == .notRetryable(.fullyBuilt))
        #expect(core.forbiddenTransitions.isEmpty)
        // Rows changed outside the core (a FULLYBUILT build that still has a running queue entry): the builder's
        // late failure would take it back to FAILEDTOBUILD, and the batch names that step.
        var corrupt = Self.dispatched(12, at: 0)
        corrupt.status = .fullyBuilt
        corrupt.queue = QueueRecord(.running(builder: 1, leaseUntil: 100))
        core = LifecycleCore(builders: [Self.builder(1, "a1")], builds: [corrupt], now: 1, leaseSeconds: Self.lease)
        _ = core.apply(Self.report("a1", 1, .finished(Self.ref(12), .packageFail, files: [], log: nil)))
        #expect(core.forbiddenTransitions.map { "\($0.build) \($0.from.rawValue)>\($0.to.rawValue)" } == ["12 FULLYBUILT>FAILEDTOBUILD"])
        for from in BuildStatus.allCases {
            for to in BuildStatus.allCases where from != to {
                #expect(BuildStatus.transitionRows.contains { $0.from == from && $0.to == to } == from.canTransition(to: to))
                #expect(BuildStatus.writableRows.contains { $0.from == from && $0.to == to } == from.mayWrite(to: to))
            }
        }
    }
}

/// The table of builder facts the availability rule is checked on, in Swift here and in SQL by
/// `AvailabilitySQLTests` (the dispatcher's claim window counts idle builders in SQL).
public enum BuilderAvailabilityCases {
    public struct Case: Sendable, CustomTestStringConvertible {
        public let facts: BuilderAvailability.Facts
        public let expected: BuilderAvailability
        public var testDescription: String { "\(facts) -> \(expected)" }
    }

    static func facts(active: Bool = true, ok: Bool = true, manual: Bool = false, state: AgentState? = .idle,
                      seen: Double? = 1, holds: Bool = false) -> BuilderAvailability.Facts {
        BuilderAvailability.Facts(active: active, builderok: ok, manual: manual, agentState: state,
                                  secondsSinceSeen: seen, holdsBuild: holds)
    }

    public static let all: [Case] = [
        Case(facts: facts(), expected: .idle),
        Case(facts: facts(active: false), expected: .removed),
        Case(facts: facts(ok: false), expected: .failed),
        Case(facts: facts(manual: true), expected: .manual),
        Case(facts: facts(holds: true), expected: .building),
        Case(facts: facts(state: .aborting, holds: true), expected: .aborting),
        Case(facts: facts(manual: true, holds: true), expected: .building),
        Case(facts: facts(seen: 19), expected: .idle),
        Case(facts: facts(seen: 21), expected: .offline),
        Case(facts: facts(seen: nil), expected: .offline),
        Case(facts: facts(state: nil), expected: .offline),
        Case(facts: facts(state: .building), expected: .building),
        Case(facts: facts(state: .aborting), expected: .aborting),
        Case(facts: facts(ok: false, manual: true, seen: nil), expected: .failed),
    ]
}
