@testable import BuilddMasterKit
import BuilddShared
import Postgres
import Testing

/// Rules item 6 of issue 24 moved into the core, on real PostgreSQL through the store: what the core refuses
/// is refused in the database's rows, and rows that do not describe a state are refused with the row named.
@Suite(.timeLimit(.minutes(3))) struct CoreRuleRefusalTests {
    static func request(_ source: String) -> BuildRequest {
        BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: source, sourceVersion: "1.0")
    }

    /// A builder put in manual mode after it took a job from the shared queue accepts it anyway: the accept is
    /// refused (it is told to abort), the build stays waiting for another builder, and the builder holds nothing.
    @Test func aBuilderInManualModeIsNeverStartedWhateverItAccepts() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        try await store.addBuilder(name: "m1", processors: ["amd64"], brokerUser: "m1")
        let build = try await store.submit(Self.request("manual"))
        _ = try await store.apply(AgentEvent(kind: .hello, builder: "m1", session: "s", seq: 1, state: .idle),
                                  userID: "m1", leaseSeconds: 30)
        let job = try #require(try await store.claimJobs(processor: "amd64", lookahead: 0, leaseSeconds: 30,
                                                         artifactBaseURL: "http://m").first)
        #expect(job.buildID == build)
        try await store.setBuilderManual("m1", true, actor: "test")
        let outcome = try await store.apply(
            AgentEvent(kind: .accepted, builder: "m1", session: "s", seq: 2, state: .building, buildID: build,
                       attempt: job.attempt, uploadKeySHA256: String(repeating: "ab", count: 32)),
            userID: "m1", leaseSeconds: 30)
        #expect(outcome == .abort(buildID: build, attempt: job.attempt,
                                  reason: "build \(build): builder is disabled or in manual mode"), "\(outcome)")
        let row = try #require(try await store.database.query("""
            SELECT b.status, q.state, (SELECT count(*) FROM buildqueue h WHERE h.builder_id = (SELECT id FROM builder
                   WHERE name = 'm1') AND \(QueueRecord.State.sqlHolds("h.state"))) AS held
              FROM build b JOIN buildqueue q ON q.build_id = b.id WHERE b.id = $1
            """, [build]).first)
        #expect(try row.string("status") == "NEEDSBUILD" && row.string("state") == "DISPATCHED" && row.int("held") == 0)
        // Out of manual mode, the same builder may take the next claim of it.
        try await store.setBuilderManual("m1", false, actor: "test")
        #expect(try await store.releaseClaim(buildID: build, attempt: job.attempt))
        let again = try #require(try await store.claimJobs(processor: "amd64", lookahead: 0, leaseSeconds: 30,
                                                           artifactBaseURL: "http://m").first)
        #expect(again.attempt == job.attempt + 1)
        let started = try await store.apply(
            AgentEvent(kind: .accepted, builder: "m1", session: "s", seq: 3, state: .building, buildID: build,
                       attempt: again.attempt, uploadKeySHA256: String(repeating: "ab", count: 32)),
            userID: "m1", leaseSeconds: 30)
        #expect(started == .applied("build \(build) attempt \(again.attempt) started on m1"), "\(started)")
        await database.drop()
    }

    /// A queue entry whose columns describe no phase (RUNNING with no lease) is not read with a made-up
    /// default: the batch that would touch it fails with the row named, and changes nothing.
    @Test func aQueueRowThatDescribesNoStateIsRefusedWithTheRowNamed() async throws {
        let database = try await TestDatabase.create()
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.addProcessor("amd64")
        try await store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
        try await store.addBuilder(name: "r1", processors: ["amd64"], brokerUser: "r1")
        let build = try await store.submit(Self.request("broken-row"))
        try await store.database.query("""
            UPDATE buildqueue SET state = 'RUNNING', builder_id = (SELECT id FROM builder WHERE name = 'r1'),
                   lease_expires = NULL WHERE build_id = $1
            """, [build])
        do {
            _ = try await store.apply(AgentEvent(kind: .heartbeat, builder: "r1", session: "s", seq: 1, state: .building,
                                                 buildID: build, attempt: 0), userID: "r1", leaseSeconds: 30)
            Issue.record("a RUNNING entry with no lease was read")
        } catch let error as StoreError {
            #expect(error.code == .invalid)
            #expect(error.message.contains("build \(build)'s queue entry is RUNNING without"), "\(error)")
        }
        let seq = try await store.database.query("SELECT last_seq FROM builder WHERE name = 'r1'").first?.int64("last_seq")
        #expect(seq == 0, "nothing of the failed batch was written")
        await database.drop()
    }
}
