import BuilddCore
import BuilddShared
import Testing

/// Builder reset in the core (``BuilderReset``, ``LifecycleCore/resetPass()``): a virtualized builder with a
/// reset is DIRTY after every build, gets no job until it is CLEAN, and a reset that fails or passes its
/// deadline counts as a builder failure. A manual clock, no database.
@Suite(.timeLimit(.minutes(1))) struct BuilderResetTests {
    static let revert = ResetPlan(method: .command, target: "virsh snapshot-revert builder clean", timeoutSeconds: 60)
    static let asyncRevert = ResetPlan(method: .url, target: "https://cloud.example/reset", resetProtocol: .asynchronous,
                                       timeoutSeconds: 60)

    static func builder(_ plan: ResetPlan, clean: CleanStatus = .clean, virtualized: Bool = true, failures: Int = 0,
                        manual: Bool = false) -> BuilderRecord {
        var record = BuilderRecord(id: 1, name: "vm1", kind: .agent, brokerUser: nil, active: true, manual: manual,
                                   session: "s", lastSeq: 0, agentState: .idle, cleanStatus: clean,
                                   standing: BuilderStanding(failures: failures, ok: true, notes: nil))
        record.placement = BuilderPlacement(virtualized: virtualized)
        record.reset = plan
        return record
    }

    static func dispatched(_ id: Int64, at: Double) -> BuildRecord {
        BuildRecord(id: id, attempt: 1, status: .needsBuild, builderID: nil, job: JobStanding(failures: 0, notes: nil),
                    result: nil, logName: nil, logSHA256: nil, startedAt: nil,
                    queue: QueueRecord(.dispatched(since: at, to: nil)))
    }

    static func report(_ seq: Int64, _ event: BuilderReport.Event) -> BuilderReport {
        BuilderReport(builder: "vm1", session: "s", seq: seq, event: event, message: nil, sender: .agent(user: nil))
    }

    static let key = String(repeating: "ab", count: 32)

    /// A build ends: the builder the master resets is DIRTY; one that cleans itself is CLEAN.
    @Test func aBuildLeavesAResetBuilderDirtyAndASelfCleaningOneClean() {
        for (plan, virtualized, expected) in [(Self.revert, true, CleanStatus.dirty), (.none, true, .clean),
                                              (Self.revert, false, .clean)] {
            var build = Self.dispatched(10, at: 99)
            build.requirements = BuildRequirements(virtualized: virtualized)
            var core = LifecycleCore(builders: [Self.builder(plan, virtualized: virtualized)], builds: [build], now: 100,
                                 leaseSeconds: 30)
            #expect(core.apply(Self.report(1, .accepted(AttemptRef(build: 10, attempt: 1), uploadKey: Self.key)))
                    == .applied("build 10 attempt 1 started on vm1"))
            #expect(core.builders[1]?.cleanStatus == .dirty, "a build that starts makes its builder DIRTY")
            _ = core.apply(Self.report(2, .finished(AttemptRef(build: 10, attempt: 1), .packageFail, files: [], log: nil)))
            #expect(core.builders[1]?.cleanStatus == expected, "\(plan.description), virtualized \(virtualized)")
            // An idle heartbeat does not make a builder the master resets CLEAN either.
            _ = core.apply(Self.report(3, .heartbeat(.idle, current: nil, logTail: nil)))
            #expect(core.builders[1]?.cleanStatus == expected)
        }
    }

    /// An operator's "reset now": a CLEAN builder the master resets becomes DIRTY, and the next pass starts its
    /// reset; one already due, under way or holding a build changes nothing; one that cleans itself or is not
    /// virtualized is refused with the reason.
    @Test func anOperatorsResetRequestMakesAResetBuilderDirtyAndNothingElse() {
        var core = LifecycleCore(builders: [Self.builder(Self.revert)], builds: [], now: 100, leaseSeconds: 30)
        #expect(core.requestReset(builder: "vm1", by: "ops") == .applied("vm1 is DIRTY: its reset starts with the next pass"))
        #expect(core.builders[1]?.cleanStatus == .dirty)
        #expect(core.builderHistory.last == BuilderHistoryEntry(builder: "vm1", kind: .reset, actor: "ops",
                                                                reason: "requested: DIRTY until its reset ends"))
        let orders = core.resetPass()
        #expect(orders.map(\.builder) == ["vm1"], "the next pass starts the reset")
        #expect(core.requestReset(builder: "vm1", by: "ops") == .ignored("its reset is under way"))
        var due = LifecycleCore(builders: [Self.builder(Self.revert, clean: .dirty)], builds: [], now: 100, leaseSeconds: 30)
        #expect(due.requestReset(builder: "vm1", by: "ops") == .ignored("its reset is already due"))
        for (plan, virtualized) in [(ResetPlan.none, true), (Self.revert, false)] {
            var core = LifecycleCore(builders: [Self.builder(plan, virtualized: virtualized)], builds: [], now: 100, leaseSeconds: 30)
            guard case .rejected(let why) = core.requestReset(builder: "vm1", by: "ops") else {
                Issue.record("\(plan.description) virtualized \(virtualized) was not refused"); continue
            }
            #expect(why.contains(virtualized ? "no reset set" : "not virtualized"), "\(why)")
            #expect(core.builders[1]?.cleanStatus == .clean && core.builderHistory.isEmpty, "a refusal changes nothing")
        }
        #expect(BuilderReset.requested(ResetFacts(clean: .clean, plan: Self.revert, virtualized: true, usable: true, manual: false,
                                                  holdsBuild: true, deadline: nil))
                == .already("it holds a build: its reset starts when that build ends"))
        var unknown = LifecycleCore(builders: [], builds: [], now: 100, leaseSeconds: 30)
        #expect(unknown.requestReset(builder: "vm9", by: nil) == .rejected("unknown builder vm9"))
        #expect(!unknown.knows(builder: "vm9") && core.knows(builder: "vm1"))
    }

    /// A DIRTY builder refuses a job whatever route it took; the build stays where it was.
    @Test func aDirtyBuilderMayNotAcceptAJob() {
        var core = LifecycleCore(builders: [Self.builder(Self.revert, clean: .dirty)],
                                 builds: [Self.dispatched(10, at: 99)], now: 100, leaseSeconds: 30)
        let outcome = core.apply(Self.report(1, .accepted(AttemptRef(build: 10, attempt: 1), uploadKey: Self.key)))
        guard case .abort(_, _, let reason) = outcome else { Issue.record("\(outcome)"); return }
        #expect(reason.contains("DIRTY"), "\(reason)")
        #expect(core.builds[10]?.status == .needsBuild && core.builds[10]?.queue?.state == .dispatched)
    }

    /// The pass starts a reset of a usable DIRTY builder (CLEANING until its deadline); a synchronous run's
    /// success makes it CLEAN, with both steps in its history.
    @Test func aSynchronousResetEndsCleanWhenItsCommandSucceeds() {
        var core = LifecycleCore(builders: [Self.builder(Self.revert, clean: .dirty)], builds: [], now: 1_000,
                                 leaseSeconds: 30)
        let orders = core.resetPass()
        #expect(orders == [LifecycleCore.ResetOrder(builder: "vm1", plan: Self.revert, attempt: 1, deadline: 1_060)])
        #expect(core.builders[1]?.cleanStatus == .cleaning && core.builders[1]?.resetDeadline == 1_060)
        #expect(core.resetPass().isEmpty, "a reset under way is not started twice")
        #expect(core.resetRan(builder: "vm1", attempt: 1, result: .succeeded) == .applied("reset of vm1: CLEAN"))
        #expect(core.builders[1]?.cleanStatus == .clean && core.builders[1]?.resetDeadline == nil)
        #expect(core.builderHistory.map { "\($0.kind.rawValue) \($0.reason ?? "")" }
                == ["reset started: command (protocol 1.1, deadline 60 s)", "reset CLEAN"])
        // A late result of the same reset changes nothing.
        #expect(core.resetRan(builder: "vm1", attempt: 1, result: .failed("late")) == .ignored("reset 1 of vm1 is no longer under way"))
    }

    /// An asynchronous reset stays CLEANING after its URL answered, until it is said to be done.
    @Test func anAsynchronousResetWaitsUntilItIsSaidToBeDone() {
        var core = LifecycleCore(builders: [Self.builder(Self.asyncRevert, clean: .dirty)], builds: [], now: 1_000,
                                 leaseSeconds: 30)
        #expect(core.resetPass().count == 1)
        _ = core.resetRan(builder: "vm1", attempt: 1, result: .succeeded)
        #expect(core.builders[1]?.cleanStatus == .cleaning)
        #expect(core.resetCompleted(builder: "vm1", by: "cli:ops") == .applied("vm1 is CLEAN"))
        #expect(core.builders[1]?.cleanStatus == .clean)
        #expect(core.resetCompleted(builder: "vm1", by: "cli:ops") == .ignored("vm1 is already CLEAN"))
        #expect(core.builderHistory.last?.actor == "cli:ops")
    }

    /// A reset past its deadline, or one that failed, counts a builder failure and leaves it DIRTY; five in a
    /// row mark it not ok, and a builder that is not ok is not reset again.
    @Test func aResetThatHangsOrFailsCountsAgainstTheBuilderUntilItIsBroken() {
        var now = 1_000.0
        var record = Self.builder(Self.revert, clean: .dirty)
        for round in 1...5 {
            var core = LifecycleCore(builders: [record], builds: [], now: now, leaseSeconds: 30)
            #expect(core.resetPass().count == 1, "round \(round)")
            if round % 2 == 1 {
                record = core.builders[1]!
                now += 61  // past the deadline
                core = LifecycleCore(builders: [record], builds: [], now: now, leaseSeconds: 30)
                #expect(core.resetPass().isEmpty)
            } else {
                _ = core.resetRan(builder: "vm1", attempt: round, result: .failed("exit status 1"))
            }
            record = core.builders[1]!
            #expect(record.cleanStatus == .dirty && record.standing.failures == round, "round \(round)")
        }
        #expect(!record.standing.ok && record.standing.notes == "reset did not end within 60 s", "\(record.standing)")
        var core = LifecycleCore(builders: [record], builds: [], now: now + 100, leaseSeconds: 30)
        #expect(core.resetPass().isEmpty, "a builder that is not ok is not reset")
    }

    /// Manual builders, builders that hold a build and builders the master does not reset are left alone.
    @Test func thePassLeavesAloneWhatItMayNotReset() {
        #expect(BuilderReset.pass(ResetFacts(clean: .dirty, plan: Self.revert, virtualized: true, usable: true, manual: true,
                                             holdsBuild: false, deadline: nil), now: 0) == .nothing)
        #expect(BuilderReset.pass(ResetFacts(clean: .dirty, plan: Self.revert, virtualized: true, usable: true, manual: false,
                                             holdsBuild: true, deadline: nil), now: 0) == .nothing)
        #expect(BuilderReset.pass(ResetFacts(clean: .dirty, plan: .none, virtualized: true, usable: true, manual: false,
                                             holdsBuild: false, deadline: nil), now: 0) == .nothing)
        #expect(BuilderReset.pass(ResetFacts(clean: .cleaning, plan: Self.revert, virtualized: true, usable: true,
                                             manual: false, holdsBuild: false, deadline: 10), now: 10) == .nothing)
        #expect(BuilderReset.pass(ResetFacts(clean: .cleaning, plan: Self.revert, virtualized: true, usable: true,
                                             manual: false, holdsBuild: false, deadline: 10), now: 10.5)
                == .expired(reason: "reset did not end within 60 s"))
    }

    /// Availability: DIRTY and CLEANING builders take no work; CLEANING shows even while its agent is away.
    @Test func dirtyAndCleaningBuildersTakeNoWork() {
        func facts(_ clean: CleanStatus, seen: Double? = 1) -> BuilderAvailability.Facts {
            BuilderAvailability.Facts(active: true, builderok: true, manual: false, agentState: .idle,
                                      secondsSinceSeen: seen, holdsBuild: false, clean: clean)
        }
        #expect(BuilderAvailability.of(facts(.clean)) == .idle)
        #expect(BuilderAvailability.of(facts(.dirty)) == .dirty)
        #expect(BuilderAvailability.of(facts(.cleaning)) == .cleaning)
        #expect(BuilderAvailability.of(facts(.cleaning, seen: nil)) == .cleaning)
        #expect(BuilderAvailability.of(facts(.dirty, seen: nil)) == .offline)
        #expect(!BuilderAvailability.dirty.takesWork && !BuilderAvailability.cleaning.takesWork)
    }

    /// What an operator may set: only virtualized builders are reset, with a command or an http(s) URL.
    @Test func aResetAnOperatorMaySet() {
        #expect(Self.revert.problem(virtualized: true) == nil)
        #expect(Self.revert.problem(virtualized: false) == "only virtualized builders are reset; this one is not virtualized")
        #expect(ResetPlan(method: .url, target: "ftp://x").problem(virtualized: true) == "the reset URL must be http:// or https://")
        #expect(ResetPlan(method: .command, target: "  ").problem(virtualized: true) == "the reset command is empty")
        #expect(ResetPlan(method: .command, target: "x", timeoutSeconds: 0).problem(virtualized: true) != nil)
        #expect(ResetPlan.none.problem(virtualized: false) == nil)
        #expect(!Self.revert.description.contains("virsh"), "a target may hold a credential; histories do not show it")
    }

    /// An agent's report of a reset ends it only when its agent is what resets it; the wire needs its fields.
    @Test func onlyAnAgentThatResetsItselfMayReportAReset() throws {
        for (plan, expected) in [(ResetPlan(method: .agent), CleanStatus.clean), (Self.revert, .cleaning)] {
            var core = LifecycleCore(builders: [Self.builder(plan, clean: .dirty)], builds: [], now: 1_000, leaseSeconds: 30)
            #expect(core.resetPass().count == 1)
            let outcome = core.apply(Self.report(1, .reset(attempt: 1, ok: true)))
            #expect(core.builders[1]?.cleanStatus == expected, "\(plan.description): \(outcome)")
            if plan.method != .agent {
                #expect(outcome == .rejected("builder vm1 is not reset by its agent; its report of a reset is refused"))
            }
        }
        var failing = LifecycleCore(builders: [Self.builder(ResetPlan(method: .agent), clean: .dirty)], builds: [],
                                    now: 1_000, leaseSeconds: 30)
        _ = failing.resetPass()
        _ = failing.apply(BuilderReport(builder: "vm1", session: "s", seq: 1, event: .reset(attempt: 1, ok: false),
                                        message: "disk check failed", sender: .agent(user: nil)))
        #expect(failing.builders[1]?.cleanStatus == .dirty && failing.builders[1]?.standing.failures == 1)
        #expect(ResetPlan(method: .agent, target: "x").problem(virtualized: true) != nil)
        // On the wire: a reset event needs its attempt and its outcome.
        var event = AgentEvent(kind: .reset, builder: "vm1", session: "s", seq: 1, state: .idle)
        #expect(throws: WireError.self) { try WireCodec.decodeEvent(WireCodec.encode(event)) }
        event.resetAttempt = 2
        event.resetOK = false
        let decoded = try WireCodec.decodeEvent(WireCodec.encode(event))
        #expect(try decoded.report(user: nil).event == .reset(attempt: 2, ok: false))
    }
}
