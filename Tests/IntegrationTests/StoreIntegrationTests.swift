@testable import BuilddMasterKit
import BuilddShared
import Postgres
import Testing

/// The store's dispatch contract on a real database, driven by synthetic agent events.
@Suite(.timeLimit(.minutes(5))) struct StoreIntegrationTests {
    struct Farm: TestResource {
        let database: TestDatabase
        let store: BuilddStore

        static func make(builders: [String] = ["a1"]) async throws -> Farm {
            let database = try await TestDatabase.create()
            let store = try await database.store()
            try await store.addProcessor("amd64")
            try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
            for builder in builders {
                try await store.addBuilder(name: builder, processors: ["amd64"], brokerUser: builder)
            }
            return Farm(database: database, store: store)
        }

        func close() async {
            store.shutdown()
            await database.drop()
        }

        func submit(_ source: String, urgency: Urgency = .medium, pocket: Pocket = .release) async throws -> Int64 {
            try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                sourceName: source, sourceVersion: "1.0", urgency: urgency, pocket: pocket))
        }

        func claim(lookahead: Int = 0) async throws -> [JobMessage] {
            try await store.claimJobs(processor: "amd64", lookahead: lookahead, leaseSeconds: 30,
                                      artifactBaseURL: "http://m")
        }

        func status(_ id: Int64) async throws -> BuildStatus { try await store.build(id).build.status }
    }

    /// Builds agent events with increasing sequence numbers.
    final class FakeAgent: @unchecked Sendable {
        let name: String
        let session = randomHexToken(bytes: 4)
        /// The upload key it declares in every `accepted` (as an agent makes one per attempt).
        let uploadKey = randomHexToken(bytes: 32)
        var seq: Int64 = 0

        init(_ name: String) { self.name = name }

        func event(_ kind: AgentEventKind, state: AgentState? = nil, job: JobMessage? = nil, buildID: Int64? = nil,
                   attempt: Int32? = nil, result: BuilderResult? = nil) -> AgentEvent {
            seq += 1
            return AgentEvent(kind: kind, builder: name, session: session, seq: seq,
                              state: state ?? (kind == .finished ? .idle : .building),
                              buildID: job?.buildID ?? buildID, attempt: job?.attempt ?? attempt, result: result, files: [],
                              uploadKeySHA256: kind == .accepted ? SHA256.hex(of: uploadKey) : nil)
        }
    }

    /// The agent says it is idle, a build is submitted, claimed and accepted by it.
    func startBuild(_ farm: Farm, _ agent: FakeAgent, source: String = "hello") async throws -> (Int64, JobMessage) {
        _ = try await apply(farm, agent.event(.hello, state: .idle))
        let id = try await farm.submit(source)
        let job = try #require(try await farm.claim().first)
        let accepted = try await apply(farm, agent.event(.accepted, job: job))
        guard case .applied = accepted else { throw StoreError(.conflict, "accept not applied: \(accepted)") }
        return (id, job)
    }

    func apply(_ farm: Farm, _ event: AgentEvent, user: String? = nil, lease: Int = 30) async throws -> EventOutcome {
        try await farm.store.apply(event, userID: user ?? event.builder, leaseSeconds: lease)
    }

    /// The window of a claim: idle builders plus the look-ahead, less the jobs already in flight, and
    /// nothing while no builder is idle (``DispatchWindow``; the claim statement's SQL is generated from it).
    @Test(arguments: [(0, 1, 0, 0), (1, 1, 0, 2), (1, 1, 2, 0), (3, 1, 1, 3), (2, 0, 5, 0)])
    func theClaimWindowIsIdleBuildersPlusLookaheadLessInFlight(idle: Int, lookahead: Int, inFlight: Int,
                                                              expected: Int) async throws {
        let farm = try await Farm.make(builders: ["a1", "a2", "a3"])
        try await closing(farm) {
            for index in 0..<10 { _ = try await farm.submit("b\(index)") }
            try await farm.store.database.query("""
                UPDATE buildqueue SET state = 'DISPATCHED', dispatched_at = now()
                 WHERE id IN (SELECT id FROM buildqueue ORDER BY id LIMIT $1)
                """, [inFlight])
            for name in ["a1", "a2", "a3"].prefix(idle) {
                _ = try await apply(farm, FakeAgent(name).event(.hello, state: .idle))
            }
            // The SQL the claim runs, the core's rule and the table agree.
            #expect(DispatchWindow.size(idle: idle, lookahead: lookahead, inFlight: inFlight) == expected)
            #expect(try await farm.claim(lookahead: lookahead).count == expected)
        }
    }

    @Test func claimsTheBestScoredBuildsWithinTheWindow() async throws {
        let farm = try await Farm.make(builders: ["a1", "a2"])
        try await closing(farm) {
            let low = try await farm.submit("low", urgency: .low, pocket: .backports)
            let security = try await farm.submit("sec", pocket: .security)
            let high = try await farm.submit("high", urgency: .high)
            let medium = try await farm.submit("medium")
            // No agent has said it is idle: nothing is dispatched.
            #expect(try await farm.claim(lookahead: 1).isEmpty)
            let a1 = FakeAgent("a1")
            _ = try await apply(farm, a1.event(.hello, state: .idle))
            let first = try await farm.claim(lookahead: 1)
            #expect(first.map(\.buildID) == [security, high])  // 1 idle + 1 look-ahead, best first
            #expect(first.allSatisfy { $0.attempt == 1 && $0.uploadURL.hasPrefix("http://m/v1/builds/") })
            #expect(try await farm.claim(lookahead: 1).isEmpty)  // window full
            // A build submitted now with a better score overtakes what already waits.
            let urgent = try await farm.submit("urgent", urgency: .emergency, pocket: .security)
            let a2 = FakeAgent("a2")
            _ = try await apply(farm, a2.event(.hello, state: .idle))
            #expect(try await farm.claim(lookahead: 1).map(\.buildID) == [urgent])
            _ = (low, medium)
        }
    }

    @Test func acceptedOfAnOldAttemptIsToldToAbort() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            _ = try await apply(farm, agent.event(.hello, state: .idle))
            let id = try await farm.submit("hello")
            let first = try #require(try await farm.claim().first)
            // The claim expires unaccepted and is claimed again: attempt 2 is current.
            try await farm.store.database.query("UPDATE buildqueue SET dispatched_at = now() - interval '1 hour'")
            #expect(try await farm.store.expireClaims(olderThanSeconds: 30) == [id])
            let second = try #require(try await farm.claim().first)
            #expect(second.attempt == first.attempt + 1)
            let stale = try await apply(farm, agent.event(.accepted, job: first))
            guard case .abort(let buildID, let attempt, _) = stale else { Issue.record("stale accept applied: \(stale)"); return }
            #expect(buildID == id && attempt == first.attempt)
            #expect(try await farm.status(id) == .needsBuild)
            let current = try await apply(farm, agent.event(.accepted, job: second))
            guard case .applied = current else { Issue.record("current accept not applied: \(current)"); return }
            #expect(try await farm.status(id) == .building)
        }
    }

    @Test func finishedAppliesOnceAndLateEventsChangeNothing() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            let (id, job) = try await startBuild(farm, agent)
            let done = try await apply(farm, agent.event(.finished, job: job, result: .packageFail))
            guard case .applied = done else { Issue.record("finished not applied: \(done)"); return }
            #expect(try await farm.status(id) == .failedToBuild)
            // A repeated finished (new sequence number) and a late heartbeat change nothing.
            let again = try await apply(farm, agent.event(.finished, job: job, result: .ok))
            guard case .ignored = again else { Issue.record("repeated finished applied: \(again)"); return }
            #expect(try await farm.status(id) == .failedToBuild)
            let history = try await farm.store.build(id).history.filter { $0.status == "FAILEDTOBUILD" }
            #expect(history.count == 1)
        }
    }

    @Test func replayedEventsAndForeignUsersAreRefused() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            let hello = agent.event(.hello, state: .idle)
            guard case .applied = try await apply(farm, hello) else { Issue.record("hello not applied"); return }
            guard case .ignored = try await apply(farm, hello) else { Issue.record("replay applied"); return }
            let foreign = try await apply(farm, agent.event(.heartbeat, state: .idle), user: "someone-else")
            guard case .rejected(let reason) = foreign else { Issue.record("foreign user accepted: \(foreign)"); return }
            #expect(reason.contains("someone-else"))
            guard case .rejected = try await apply(farm, FakeAgent("ghost").event(.hello, state: .idle)) else {
                Issue.record("unknown builder accepted"); return
            }
        }
    }

    @Test func aBuilderNeverRunsTwoBuildsAtOnce() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            _ = try await apply(farm, agent.event(.hello, state: .idle))
            _ = try await farm.submit("one")
            _ = try await farm.submit("two")
            let jobs = try await farm.claim(lookahead: 1)
            #expect(jobs.count == 2)
            guard case .applied = try await apply(farm, agent.event(.accepted, job: jobs[0])) else {
                Issue.record("first accept refused"); return
            }
            let second = try await apply(farm, agent.event(.accepted, job: jobs[1]))
            guard case .abort = second else { Issue.record("second concurrent build accepted: \(second)"); return }
        }
    }

    @Test func expiredLeasesAreCountedAndTheJobIsBlamedWhenItFailsMoreThanTheBuilder() async throws {
        let farm = try await Farm.make(builders: ["a1", "a2"])
        try await closing(farm) {
            let id = try await farm.submit("flaky")
            // The job's lease runs out on a1, then twice on a2: a1 is blamed for the first (both counts 1),
            // then the job has failed more often than a2, so a2 is forgiven and the job fails at three.
            for (round, name) in ["a1", "a2", "a2"].enumerated() {
                let agent = FakeAgent(name)
                _ = try await apply(farm, agent.event(.hello, state: .idle))
                let job = try #require(try await farm.claim().first)
                #expect(job.attempt == Int32(round + 1))
                _ = try await apply(farm, agent.event(.accepted, job: job), lease: 30)
                _ = try await apply(farm, FakeAgent(name == "a1" ? "a2" : "a1").event(.hello, state: .building))
                try await farm.store.database.query("UPDATE buildqueue SET lease_expires = now() - interval '1 second'")
                let expired = try await farm.store.expireLeases()
                #expect(expired.map(\.buildID) == [id])
                #expect(try await farm.status(id) == (round < 2 ? .needsBuild : .failedToBuild))
            }
            let detail = try await farm.store.build(id)
            #expect(detail.build.failureCount == FailureThresholds.job)
            #expect(detail.build.failnotes?.contains("lease expired") == true)
            let counts = Dictionary(uniqueKeysWithValues: try await farm.store.builders().map { ($0.name, $0.failureCount) })
            #expect(counts == ["a1": 1, "a2": 0])
        }
    }

    @Test func cancellingAWaitingBuildIsImmediate() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let id = try await farm.submit("hello")
            #expect(try await farm.store.cancel(id) == .cancelled)
            #expect(try await farm.status(id) == .cancelled)
            await #expect(throws: StoreError.self) { try await farm.store.cancel(id) }
            try await farm.store.retry(id)
            #expect(try await farm.status(id) == .needsBuild)
            await #expect(throws: StoreError.self) { try await farm.store.retry(id) }
        }
    }

    @Test func cancellingARunningBuildWaitsForTheAbort() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            let (id, job) = try await startBuild(farm, agent)
            #expect(try await farm.store.cancel(id) == .cancelling)
            let aborts = try await farm.store.abortsDue()
            #expect(aborts.count == 1 && aborts[0].buildID == id && aborts[0].builder == "a1")
            #expect(try await farm.store.abortsDue().isEmpty)  // not resent at once
            _ = try await apply(farm, agent.event(.heartbeat, state: .aborting, job: job))
            _ = try await apply(farm, agent.event(.finished, job: job, result: .aborted))
            #expect(try await farm.status(id) == .cancelled)
            #expect(try await farm.store.builders().first?.failureCount == 0)
        }
    }

    @Test func aCancelNobodyConfirmsCountsAgainstTheBuilder() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            let (id, job) = try await startBuild(farm, agent)
            try await farm.store.cancel(id, deadlineSeconds: 180)
            // The abort deadline is the 180 s asked for (not 0, not the lease), and heartbeats do not extend it.
            func left() async throws -> Double {
                try await farm.store.database.query(
                    "SELECT extract(epoch FROM lease_expires - clock_timestamp()) AS s FROM buildqueue").first!.double("s")
            }
            let justAfter = try await left()
            #expect(justAfter > 175 && justAfter <= 180, "abort deadline \(justAfter) s after the cancel, not 180")
            _ = try await apply(farm, agent.event(.heartbeat, state: .building, job: job), lease: 100_000)
            let afterHeartbeat = try await left()
            #expect(afterHeartbeat > 170 && afterHeartbeat <= justAfter, "a heartbeat moved the deadline: \(afterHeartbeat) s")
            try await farm.store.database.query("UPDATE buildqueue SET lease_expires = now() - interval '1 second'")
            _ = try await farm.store.expireLeases()
            #expect(try await farm.status(id) == .cancelled)
            #expect(try await farm.store.builders().first?.failureCount == 1)
        }
    }

    @Test func manualScoresOverrideAndAgeBonusesAccrue() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let old = try await farm.submit("old")
            let fresh = try await farm.submit("fresh")
            let base = Scoring.score(urgency: .medium, pocket: .release, component: .main)
            try await farm.store.database.query("UPDATE buildqueue SET date_queued = now() - interval '90 minutes' WHERE build_id = $1",
                                                [old])
            #expect(try await farm.store.refreshAgeScores() == 1)
            #expect(try await farm.store.refreshAgeScores() == 0)  // nothing rewritten when nothing changed
            #expect(try await farm.store.build(old).build.score == base + 20)
            #expect(try await farm.store.rescore(fresh, score: 9000) == 9000)
            try await farm.store.database.query("UPDATE buildqueue SET date_queued = now() - interval '5 hours' WHERE build_id = $1",
                                                [fresh])
            _ = try await farm.store.refreshAgeScores()
            #expect(try await farm.store.build(fresh).build.score == 9000)  // manual scores stay
            _ = try await apply(farm, FakeAgent("a1").event(.hello, state: .idle))
            #expect(try await farm.claim().first?.buildID == fresh)
            #expect(try await farm.store.rescore(old, score: nil) == base + 20)
        }
    }

    @Test func disabledAndManualBuildersGetNoWork() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            _ = try await farm.submit("hello")
            let agent = FakeAgent("a1")
            _ = try await apply(farm, agent.event(.hello, state: .idle))
            try await farm.store.setBuilderManual("a1", true, actor: "test")
            #expect(try await farm.claim().isEmpty)
            try await farm.store.setBuilderManual("a1", false, actor: "test")
            try await farm.store.disableBuilder("a1", reason: "disk replaced", actor: "test")
            #expect(try await farm.claim().isEmpty)
            #expect(try await farm.store.builders().first?.failnotes == "disk replaced")
            try await farm.store.enableBuilder("a1", actor: "test")
            #expect(try await farm.claim().count == 1)
            await #expect(throws: StoreError(.notFound, "no builder named 'nope'")) { try await farm.store.enableBuilder("nope", actor: "test") }
        }
    }

    @Test func aBuilderFailingFiveTimesIsMarkedBroken() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            for index in 1...FailureThresholds.builder {
                _ = try await farm.submit("job\(index)")
                _ = try await apply(farm, agent.event(.hello, state: .idle))
                let job = try #require(try await farm.claim().first)
                _ = try await apply(farm, agent.event(.accepted, job: job))
                _ = try await apply(farm, agent.event(.finished, job: job, result: .builderFail))
            }
            let builder = try #require(try await farm.store.builders().first)
            #expect(!builder.builderok)
            #expect(builder.failnotes?.contains("BUILDERFAIL") == true)
            _ = try await apply(farm, agent.event(.hello, state: .idle))
            #expect(try await farm.claim(lookahead: 1).isEmpty)  // a broken builder gets no work
        }
    }

    @Test func anAgentThatComesBackIdleLosesItsBuild() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            let agent = FakeAgent("a1")
            let (id, job) = try await startBuild(farm, agent)
            let restarted = FakeAgent("a1")  // a new process: new session
            _ = try await apply(farm, restarted.event(.hello, state: .idle))
            #expect(try await farm.status(id) == .needsBuild)
            #expect(try await farm.store.build(id).build.failureCount == 1)
        }
    }

    @Test func migrationIsIdempotentAndRefusesANewerSchema() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let store = BuilddStore(url: database.url, connections: 1)
        defer { store.shutdown() }
        #expect(try await store.migrate() == Migrations.all.map(\.version))
        #expect(try await store.migrate() == [])
        #expect(try await store.requireCurrentSchema() == .current)
        // Each migration records what serves it and the release that applied it.
        let own = try await store.database.query("SELECT servable_from, release FROM schema_version WHERE version = $1",
                                                 [Migrations.latestVersion]).first
        #expect(try own?.int("servable_from") == Migrations.all.last!.servableFrom)
        #expect(own?["release"] == BuilddRelease.version)
        // The next release's expand-only change: this master serves it, and `migrate` leaves it as it is.
        let next = Migrations.latestVersion + 1
        try await store.database.query("""
            INSERT INTO schema_version (version, name, servable_from, release) VALUES ($1, 'expand', $2, '9.8.0')
            """, [next, Migrations.latestVersion])
        #expect(try await store.requireCurrentSchema() == .newerServable(database: next))
        #expect(try await store.migrate() == [])
        // A contraction after it: refused, naming the schema and release that serve it.
        try await store.database.query("""
            INSERT INTO schema_version (version, name, servable_from, release) VALUES ($1, 'contract', $1, '9.9.0')
            """, [next + 1])
        await #expect(throws: Migrations.SchemaTooNewError.self) { try await store.migrate() }
        do {
            try await store.requireCurrentSchema()
            Issue.record("a schema this master cannot serve was accepted")
        } catch let error as Migrations.SchemaTooNewError {
            #expect("\(error)".contains("served by masters of schema \(next + 1) and later (buildd 9.9.0 and later)"))
        }
        // A schema from before the rows said what serves them is refused.
        try await store.database.query("INSERT INTO schema_version (version, name) VALUES (999, 'from the future')")
        await #expect(throws: Migrations.SchemaTooNewError.self) { try await store.requireCurrentSchema() }
    }

    @Test func badInputGetsAClearError() async throws {
        let farm = try await Farm.make()
        try await closing(farm) {
            await #expect(throws: StoreError(.notFound, "unknown arch series ubuntu/noble/riscv64: add it with `archseries add`")) {
                _ = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "riscv64",
                                                             sourceName: "x", sourceVersion: "1"))
            }
            await #expect(throws: StoreError.self) { _ = try await farm.submit("Bad Name!") }
            await #expect(throws: StoreError(.alreadyExists, "builder 'a1' already exists")) {
                try await farm.store.addBuilder(name: "a1", processors: ["amd64"])
            }
            await #expect(throws: StoreError.self) { try await farm.store.addBuilder(name: "b", processors: ["sparc"]) }
            let count = try await farm.store.builds().count
            #expect(count == 0)
        }
    }
}
