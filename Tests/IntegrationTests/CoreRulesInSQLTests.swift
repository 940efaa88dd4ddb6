@testable import BuilddMasterKit
import BuilddShared
import Postgres
import Testing

/// Where SQL still states a lifecycle rule (which builders take work, which leases ran out), the SQL the
/// master runs and the lifecycle core are run over one table of cases and must give the same answers.
@Suite(.timeLimit(.minutes(5))) struct CoreRulesInSQLTests {
    struct AvailabilityCase: Sendable, CustomTestStringConvertible {
        let facts: BuilderAvailability.Facts
        var testDescription: String { "\(facts)" }
    }

    static func facts(active: Bool = true, ok: Bool = true, manual: Bool = false, state: AgentState? = .idle,
                      seen: Double? = 1, holds: Bool = false, clean: CleanStatus = .clean) -> BuilderAvailability.Facts {
        BuilderAvailability.Facts(active: active, builderok: ok, manual: manual, agentState: state,
                                  secondsSinceSeen: seen, holdsBuild: holds, clean: clean)
    }

    /// Every field's effect alone and a few together, either side of the silence limit.
    static let availabilityCases: [BuilderAvailability.Facts] = [
        facts(), facts(active: false), facts(ok: false), facts(manual: true), facts(holds: true),
        facts(state: .aborting, holds: true), facts(seen: 19.5), facts(seen: 20.5), facts(seen: nil),
        facts(state: nil), facts(state: .building), facts(state: .aborting), facts(manual: true, seen: 300),
        facts(ok: false, manual: true, holds: true), facts(active: false, seen: nil),
        // A builder waiting for its reset, or under it, takes no work (``BuilderReset``).
        facts(clean: .dirty), facts(clean: .cleaning), facts(seen: nil, clean: .cleaning),
        facts(state: .building, holds: true, clean: .dirty),
    ]

    @Test func theClaimCountsAsIdleExactlyTheBuildersTheCoreSaysTakeWork() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        // One moment the facts are stated at and the rule is judged at, so a slow run does not age them.
        let moment = try await store.database.query("SELECT now()::text AS t").first!.string("t")
        for (index, facts) in Self.availabilityCases.enumerated() {
            let name = "b\(index)"
            try await store.addBuilder(name: name, processors: ["amd64"], brokerUser: name)
            try await store.database.query("""
                UPDATE builder SET active = $2, builderok = $3, manual = $4, agent_state = $5,
                       last_seen = $7::timestamptz - make_interval(secs => $6::float8), clean_status = $8 WHERE name = $1
                """, [name, facts.active, facts.builderok, facts.manual, facts.agentState?.rawValue, facts.secondsSinceSeen,
                      moment, facts.clean.rawValue])
            if facts.holdsBuild {
                let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                sourceName: "held\(index)", sourceVersion: "1.0"))
                try await store.database.query("""
                    UPDATE buildqueue SET state = 'RUNNING', builder_id = (SELECT id FROM builder WHERE name = $2),
                           lease_expires = now() + interval '1 hour'
                     WHERE build_id = $1
                    """, [build, name])
            }
        }
        let rows = try await store.database.query("""
            SELECT b.name, coalesce((\(BuilderAvailability.sqlCondition(alias: "b", silence: "$1", now: "$2::timestamptz"))),
                                    false) AS takes
              FROM builder b ORDER BY b.id
            """, [BuilderAvailability.silenceSeconds, moment]).rows
        // The claim uses the same rule with the database's clock.
        #expect(BuilddStore.idleBuilderCondition == BuilderAvailability.sqlCondition(alias: "b", silence: "$1", now: "now()"))
        #expect(rows.count == Self.availabilityCases.count)
        var idle = 0
        for (facts, row) in zip(Self.availabilityCases, rows) {
            let core = BuilderAvailability.of(facts).takesWork
            let sql = try row.bool("takes")
            #expect(sql == core, "\(facts): SQL says \(sql), the core \(core)")
            if core { idle += 1 }
        }
        #expect(idle == 2)  // the table has both answers
        await database.drop()
    }

    struct LeaseCase: Sendable {
        let state: QueueRecord.State
        /// Seconds from now until the lease (or abort deadline) runs out; negative: ran out.
        let leaseIn: Double?
    }

    static let leaseCases: [LeaseCase] = [
        LeaseCase(state: .running, leaseIn: -120), LeaseCase(state: .running, leaseIn: 120),
        LeaseCase(state: .cancelling, leaseIn: -120), LeaseCase(state: .cancelling, leaseIn: 120),
        LeaseCase(state: .dispatched, leaseIn: -120), LeaseCase(state: .waiting, leaseIn: -120),
        LeaseCase(state: .running, leaseIn: -3600), LeaseCase(state: .running, leaseIn: 3600),
    ]

    @Test func theLeaseQueryPicksExactlyTheBuildsTheCoreExpires() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        var builds: [Int64] = []
        for (index, example) in Self.leaseCases.enumerated() {
            try await store.addBuilder(name: "b\(index)", processors: ["amd64"], brokerUser: "b\(index)")
            let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                            sourceName: "l\(index)", sourceVersion: "1.0"))
            let holds = example.state == .running || example.state == .cancelling
            try await store.database.query("""
                UPDATE buildqueue SET state = $2, builder_id = (SELECT id FROM builder WHERE name = $3),
                       dispatched_at = now(), lease_expires = now() + make_interval(secs => $4::float8)
                 WHERE build_id = $1
                """, [build, example.state.rawValue, holds ? "b\(index)" : nil, holds ? example.leaseIn : nil])
            builds.append(build)
        }
        let picked = Set(try await store.database.query("""
            SELECT q.build_id FROM buildqueue q WHERE \(BuilddStore.leaseExpiredCondition)
            """).rows.map { try $0.int64("build_id") })
        let now = 1_000_000.0
        var expired = 0
        for (example, build) in zip(Self.leaseCases, builds) {
            let holds = example.state == .running || example.state == .cancelling
            let queue = QueueRecord(try #require(QueueRecord.Phase.stored(
                state: example.state, builder: holds ? 1 : nil, dispatchedAt: now,
                leaseUntil: holds ? example.leaseIn.map { now + $0 } : nil)))
            var machine = BuildRecord(id: build, attempt: 1, status: .building, builderID: nil,
                                      job: JobStanding(failures: 0, notes: nil), result: nil, logName: nil,
                                      logSHA256: nil, startedAt: nil, queue: queue).lifecycle
            let action = machine.tick(now: now, acceptTimeout: .infinity)
            let core: Bool = switch action {
            case .ignore, .reclaim: false
            default: true
            }
            #expect(picked.contains(build) == core, "\(example): SQL \(picked.contains(build)), core \(core)")
            if core { expired += 1 }
        }
        #expect(expired == 3)
        await database.drop()
    }

    /// The claim statement moves builds as ``BuildLifecycle/claim(attempt:now:)`` says: the claimed ones
    /// from waiting to dispatched with the next attempt at the claim's time, the others stay waiting.
    @Test func theClaimStatementMovesBuildsAsTheCoreClaims() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        try await store.addBuilder(name: "a1", processors: ["amd64"], brokerUser: "a1")
        var builds: [Int64] = []
        for index in 0..<4 {
            builds.append(try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "k\(index)", sourceVersion: "1.0")))
        }
        _ = try await store.apply(AgentEvent(kind: .hello, builder: "a1", session: "s", seq: 1, state: .idle),
                                  userID: "a1", leaseSeconds: 30)
        let ids = builds
        let before = try await store.database.withConnection { connection in
            try BuilddStore.loadCore(builderNames: [], builderIDs: [], buildIDs: ids, filesOf: [], leaseSeconds: 30,
                                     on: connection).builds
        }
        let jobs = try await store.claimJobs(processor: "amd64", lookahead: 1, leaseSeconds: 30, artifactBaseURL: "http://m")
        #expect(jobs.count == 2)  // one idle builder plus a look-ahead of one
        let after = try await store.database.withConnection { connection in
            try BuilddStore.loadCore(builderNames: [], builderIDs: [], buildIDs: ids, filesOf: [], leaseSeconds: 30,
                                     on: connection).builds
        }
        for build in builds {
            var machine = try #require(before[build]).lifecycle
            let record = try #require(after[build])
            if jobs.contains(where: { $0.buildID == build }) {
                let since = try #require(record.queue?.dispatchedAt)
                #expect(machine.claim(attempt: before[build]!.attempt + 1, now: since) == .start)
                #expect(record.attempt == before[build]!.attempt + 1)
            }
            #expect(record.lifecycle == machine, "build \(build): the store left \(record.lifecycle), the core \(machine)")
        }
        await database.drop()
    }

    /// Claims nobody accepted in time go back to waiting: the watchdog's SQL and the core agree.
    @Test func theClaimQueryPicksExactlyTheClaimsTheCoreReclaims() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        let timeout = 30.0
        // Seconds since the claim, by state: either side of the accept timeout, and states it does not touch. The
        // rows are set and read in one transaction, so at one now() of the database's: a loaded machine cannot
        // carry a case across the timeout between the write and the read.
        let cases: [(QueueRecord.State, Double)] = [(.dispatched, 5), (.dispatched, 25), (.dispatched, 35), (.dispatched, 600),
                                                    (.waiting, 600), (.running, 600)]
        var builds: [Int64] = []
        for index in cases.indices {
            builds.append(try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "c\(index)", sourceVersion: "1.0")))
            try await store.addBuilder(name: "c\(index)", processors: ["amd64"], brokerUser: "c\(index)")
        }
        let rows = zip(cases, builds).enumerated().map { ($0.offset, $0.element.0.0.rawValue, $0.element.0.1, $0.element.1) }
        let picked = Set(try await store.database.transaction { connection in
            for (index, state, age, build) in rows {
                _ = try connection.query("""
                    UPDATE buildqueue SET state = $2, dispatched_at = now() - make_interval(secs => $3::float8),
                           builder_id = CASE WHEN $2 = 'RUNNING' THEN (SELECT id FROM builder WHERE name = $4) END,
                           lease_expires = CASE WHEN $2 = 'RUNNING' THEN now() + interval '1 hour' END
                     WHERE build_id = $1
                    """, [build, state, age, "c\(index)"])
            }
            return try connection.query("""
                SELECT q.build_id FROM buildqueue q WHERE \(BuilddStore.claimExpiredCondition)
                """, [Int(timeout)]).rows.map { try $0.int64("build_id") }
        })
        let now = 1_000_000.0
        for ((state, age), build) in zip(cases, builds) {
            let running = state == .running
            let queue = QueueRecord(try #require(QueueRecord.Phase.stored(
                state: state, builder: running ? 1 : nil, dispatchedAt: now - age, leaseUntil: running ? now + 3600 : nil)))
            var machine = BuildRecord(id: build, attempt: 1, status: .needsBuild, builderID: nil,
                                      job: JobStanding(failures: 0, notes: nil), result: nil, logName: nil,
                                      logSHA256: nil, startedAt: nil, queue: queue).lifecycle
            let core = machine.tick(now: now, acceptTimeout: timeout) == .reclaim
            #expect(picked.contains(build) == core, "\(state) \(age) s: SQL \(picked.contains(build)), core \(core)")
        }
        #expect(picked.count == 2)
        await database.drop()
    }

    /// Placement: builders and builds of every kind, stored as the store stores them; the claims' SQL
    /// conditions and the core must agree on every pair, and on the shared queues.
    @Test func theClaimsPlaceBuildsExactlyAsTheCorePlacesThem() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        let placements: [BuilderPlacement] = [
            .plain, BuilderPlacement(virtualized: false), BuilderPlacement(openResources: ["large"]),
            BuilderPlacement(restrictedResources: ["gpu"]), BuilderPlacement(openResources: ["large"], restrictedResources: ["gpu"]),
            BuilderPlacement(restrictedResources: ["gpu", "fpga"]), BuilderPlacement(virtualized: false, restrictedResources: ["gpu"]),
            BuilderPlacement(virtualized: false, openResources: ["large", "gpu"]),
        ]
        let requirements: [BuildRequirements] = [[], ["gpu"], ["large"], ["gpu", "large"], ["gpu", "fpga"]].flatMap { constraints in
            [true, false].map { BuildRequirements(virtualized: $0, constraints: Set(constraints)) }
        }
        var builders: [String: BuilderPlacement] = [:]
        var builds: [Int64: BuildRequirements] = [:]
        for (index, placement) in placements.enumerated() {
            builders["p\(index)"] = placement
            try await store.addBuilder(name: "p\(index)", processors: ["amd64"], brokerUser: "p\(index)", placement: placement)
        }
        // Builders the master resets take their jobs addressed to them, however plain their placement.
        var resets: [String: ResetPlan] = [:]
        for (index, placement) in [BuilderPlacement.plain, BuilderPlacement(virtualized: false), .plain].enumerated() {
            let name = "reset\(index)"
            builders[name] = placement
            resets[name] = index == 2 ? .none : ResetPlan(method: .command, target: "true")
            try await store.addBuilder(name: name, processors: ["amd64"], brokerUser: name, placement: placement)
            try await store.database.query("UPDATE builder SET reset_method = $2, reset_target = $3 WHERE name = $1",
                                           [name, resets[name]!.method.rawValue, resets[name]!.target])
        }
        for (index, needs) in requirements.enumerated() {
            var request = BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                       sourceName: "r\(index)", sourceVersion: "1.0")
            request.virtualized = needs.virtualized
            request.constraints = needs.constraints
            builds[try await store.submit(request)] = needs
        }
        let rows = try await store.database.query("""
            SELECT b.name, q.build_id, \(Placement.sqlCondition(build: "q", builder: "b")) AS may,
                   \(Placement.sqlTakesSharedQueue(builder: "b")) AS shared_builder,
                   \(BuilderReset.sqlResets(builder: "b")) AS resets,
                   \(Placement.sqlGoesToSharedQueue(build: "q")) AS shared_build
              FROM builder b CROSS JOIN buildqueue q
            """).rows
        #expect(rows.count == builders.count * builds.count)
        for row in rows {
            let placement = try #require(builders[try row.string("name")])
            let requirements = try #require(builds[try row.int64("build_id")])
            #expect(try row.bool("may") == Placement.mayTake(placement, requirements),
                    "\(placement.description) / \(requirements.description)")
            let reset = resets[try row.string("name")] ?? .none
            #expect(try row.bool("shared_builder") == placement.takesSharedQueue(reset: reset),
                    "\(placement.description), reset \(reset.description)")
            #expect(try row.bool("resets") == reset.resets(virtualized: placement.virtualized), "\(reset.description)")
            #expect(try row.bool("shared_build") == requirements.goesToSharedQueue, "\(requirements.description)")
        }
        await database.drop()
    }

    /// The database's `build_transition` holds exactly the changes ``BuildStatus/mayWrite(to:)`` allows, and its
    /// trigger refuses an update outside them (here, a FULLYBUILT build written back to NEEDSBUILD, and a waiting
    /// one written straight to SUPERSEDED and then to BUILDING) with the build and the two statuses named.
    @Test func theDatabaseRefusesEveryStatusChangeTheGraphForbids() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        let rows = Set(try await store.database.query("SELECT from_status, to_status FROM build_transition").rows.map {
            "\(try $0.string("from_status"))>\(try $0.string("to_status"))"
        })
        let swift = Set(BuildStatus.writableRows.map { "\($0.from.rawValue)>\($0.to.rawValue)" })
        #expect(rows == swift, "only in SQL: \(rows.subtracting(swift).sorted()); only in Swift: \(swift.subtracting(rows).sorted())")
        #expect(swift.contains("BUILDING>FULLYBUILT") && !swift.contains("FULLYBUILT>NEEDSBUILD"))
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                        sourceName: "g", sourceVersion: "1.0"))
        try await store.database.query("UPDATE build SET status = 'BUILDING' WHERE id = $1", [build])
        try await store.database.query("UPDATE build SET status = 'FULLYBUILT' WHERE id = $1", [build])
        do {
            try await store.database.query("UPDATE build SET status = 'NEEDSBUILD' WHERE id = $1", [build])
            Issue.record("FULLYBUILT -> NEEDSBUILD was written")
        } catch {
            #expect("\(error)".contains("build \(build) may not go from FULLYBUILT to NEEDSBUILD"), "\(error)")
        }
        let other = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                        sourceName: "h", sourceVersion: "1.0"))
        try await store.database.query("UPDATE build SET status = 'SUPERSEDED' WHERE id = $1", [other])
        await #expect(throws: (any Error).self) {
            try await store.database.query("UPDATE build SET status = 'BUILDING' WHERE id = $1", [other])
        }
        let statuses = try await store.database.query("SELECT status FROM build WHERE id = ANY ($1::bigint[]) ORDER BY id",
                                                      [PostgresArray([build, other])]).rows.map { try $0.string("status") }
        #expect(statuses == ["FULLYBUILT", "SUPERSEDED"])
        await database.drop()
    }

    /// Which cancelling builds' builders are told (again) to abort: the watchdog's SQL picks exactly the ones the
    /// core says are due, either side of the resend interval; the store's pass marks them told.
    @Test func theAbortQueryPicksExactlyTheAbortsTheCoreSends() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        let resend = Double(BuildLifecycle.abortResendSeconds)
        // (queue state, seconds since the last abort sent; nil: never sent)
        let cases: [(QueueRecord.State, Double?)] = [(.cancelling, nil), (.cancelling, 1), (.cancelling, resend - 2),
                                                     (.cancelling, resend + 2), (.cancelling, 3600), (.running, nil),
                                                     (.running, 3600), (.dispatched, nil), (.waiting, nil)]
        var builds: [Int64] = []
        for index in cases.indices {
            builds.append(try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "x\(index)", sourceVersion: "1.0")))
            try await store.addBuilder(name: "x\(index)", processors: ["amd64"], brokerUser: "x\(index)")
        }
        let rows = zip(cases, builds).enumerated().map { ($0.offset, $0.element.0.0.rawValue, $0.element.0.1, $0.element.1) }
        let picked = Set(try await store.database.transaction { connection in
            for (index, state, sent, build) in rows {
                let holds = state == "RUNNING" || state == "CANCELLING"
                _ = try connection.query("""
                    UPDATE buildqueue SET state = $2, dispatched_at = now(),
                           builder_id = CASE WHEN $5 THEN (SELECT id FROM builder WHERE name = $4) END,
                           lease_expires = CASE WHEN $5 THEN now() + interval '1 hour' END,
                           abort_sent_at = now() - make_interval(secs => $3::float8)
                     WHERE build_id = $1
                    """, [build, state, sent, "x\(index)", holds])
            }
            return try connection.query("SELECT q.build_id FROM buildqueue q WHERE \(BuilddStore.abortDueCondition)")
                .rows.map { try $0.int64("build_id") }
        })
        let now = 1_000_000.0
        var due: Set<Int64> = []
        for ((state, sent), build) in zip(cases, builds) {
            let holds = state == .running || state == .cancelling
            let queue = QueueRecord(try #require(QueueRecord.Phase.stored(
                state: state, builder: holds ? 1 : nil, dispatchedAt: now, leaseUntil: holds ? now + 3600 : nil)))
            let machine = BuildRecord(id: build, attempt: 1, status: .building, builderID: nil,
                                      job: JobStanding(failures: 0, notes: nil), result: nil, logName: nil,
                                      logSHA256: nil, startedAt: nil, queue: queue).lifecycle
            let core = machine.abortDue(now: now, lastSent: sent.map { now - $0 })
            #expect(picked.contains(build) == core, "\(state) \(sent.map { "\($0) s" } ?? "never"): SQL \(picked.contains(build)), core \(core)")
            if core { due.insert(build) }
        }
        #expect(due.count == 3)
        // The store's pass tells exactly those, names their builders, and not again at once. The builders told
        // within the interval are told again now, so that the seconds a loaded machine spends between the table
        // above and the passes below cannot carry one of them past the interval (the table's instants are fixed;
        // these are not).
        try await store.database.query("""
            UPDATE buildqueue SET abort_sent_at = now()
             WHERE state = 'CANCELLING' AND abort_sent_at IS NOT NULL AND NOT (build_id = ANY ($1::bigint[]))
            """, [PostgresArray(Array(due))])
        let told = try await store.abortsDue()
        #expect(Set(told.map(\.buildID)) == due)
        #expect(told.allSatisfy { told in rows.contains { $0.3 == told.buildID && "x\($0.0)" == told.builder } })
        #expect(try await store.abortsDue().isEmpty)
        await database.drop()
    }

    /// The age bonus the watchdog's SQL gives waiting builds is the core's (``Scoring/ageScore(waited:)``) either
    /// side of every step of the table; a build an operator scored keeps its score, and clearing it (the core's
    /// rescore) gives the same bonus the SQL gives.
    @Test func theAgeBonusInSQLIsTheCoresAndARescoreClearedEarnsIt() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        let ages: [Double] = [0, 10] + Scoring.ageBonuses.flatMap { [Double($0.seconds) - 2, Double($0.seconds) + 2] } + [86_400]
        var builds: [(Int64, Double)] = []
        for (index, age) in ages.enumerated() {
            let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                            sourceName: "s\(index)", sourceVersion: "1.0"))
            builds.append((build, age))
        }
        let manual = builds[builds.count - 1].0
        #expect(try await store.rescore(manual, score: 7) == 7)
        // The ages are set, the store's refresh statement run and the scores read in one transaction, so at one
        // now() of the database's: no case drifts across a step between the write and the refresh.
        let aged = builds
        let scores = try await store.database.transaction { connection in
            for (build, age) in aged {
                try connection.execute("""
                    UPDATE buildqueue SET date_queued = now() - make_interval(secs => $2::float8) WHERE build_id = $1
                    """, [build, age])
            }
            try connection.execute(BuilddStore.ageRefresh, [BuilddStore.youngestAgeBonus])
            return Dictionary(uniqueKeysWithValues: try connection.query(
                "SELECT build_id, basescore, lastscore FROM buildqueue").rows.map {
                (try $0.int64("build_id"), (base: try $0.int("basescore"), last: try $0.int("lastscore")))
            })
        }
        for (build, age) in builds where build != manual {
            let score = try #require(scores[build])
            #expect(score.last == score.base + Scoring.ageScore(waited: age), "waited \(age) s")
        }
        #expect(scores[manual]?.last == 7, "an operator's score is not aged")
        let cleared = try await store.rescore(manual, score: nil)
        let base = try #require(scores[manual]).base
        #expect(cleared == base + Scoring.ageScore(waited: 86_400))
        await database.drop()
    }
}
