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
                    startedAt: nil, queue: QueueRecord(state: .dispatched, builderID: nil, dispatchedAt: at, leaseUntil: nil))
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
        build.queue = QueueRecord(state: .running, builderID: 1, dispatchedAt: clock.now, leaseUntil: clock.now + Self.lease)
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
        build.queue = QueueRecord(state: .running, builderID: 1, dispatchedAt: clock.now, leaseUntil: clock.now + 30)
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
        var core = LifecycleCore(builders: [], builds: [failed, running], now: 1, leaseSeconds: Self.lease)
        #expect(core.retry(11, processor: 1, score: 2000) == .notRetryable(.building))
        #expect(core.retry(12, processor: 1, score: 2000) == .notFound)
        #expect(core.retry(10, processor: 1, score: 2000) == .queued)
        let retried = core.builds[10]
        #expect(retried?.status == .needsBuild && retried?.queue?.state == .waiting)
        #expect(retried?.job == JobStanding(failures: 0, notes: nil) && retried?.result == nil)
        #expect(retried?.enqueued == BuildRecord.Enqueued(processor: 1, score: 2000) && retried?.finished == .clear)
        #expect(retried?.attempt == 3)  // attempts go on: the next claim is attempt 4
        #expect(core.history.last == HistoryEntry(build: 10, status: .needsBuild, attempt: 3, builder: nil,
                                                  message: "retried from FAILEDTOBUILD"))
        #expect(core.retry(10, processor: 1, score: 2000) == .notRetryable(.needsBuild))
    }

    @Test func filesThatDoNotMatchTheUploadAreAnInfrastructureFailure() {
        let good = FileDigest(name: "hello.deb", sha256: String(repeating: "a", count: 64), size: 10)
        var other = good
        other.size = 11
        var build = Self.dispatched(10, at: 0)
        build.queue = QueueRecord(state: .running, builderID: 1, dispatchedAt: 0, leaseUntil: 100)
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
        #expect(standing.countFailure("fifth") == true && standing.notes == "fifth")
        standing.forgive(faults: 2)
        #expect(standing.failures == FailureThresholds.builder)  // a broken builder is not forgiven by polls
        standing.reset()
        #expect(standing == BuilderStanding(failures: 0, ok: true, notes: nil))
        standing.countFailure("a")
        standing.countFailure("b")
        standing.forgive(faults: 5)
        #expect(standing.failures == 0)
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
