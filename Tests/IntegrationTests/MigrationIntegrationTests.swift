@testable import BuilddMasterKit
import BuilddShared
import Postgres
import Testing

/// A database populated under the previous schema is carried over by `migrate` with its history, and
/// the store works on it afterwards.
@Suite(.timeLimit(.minutes(5))) struct MigrationIntegrationTests {
    @Test func aPopulatedVersionFourDatabaseMigratesWithItsHistory() async throws {
        let database = try await TestDatabase.create()
        let url = database.url
        // Version 4, filled the way a running farm fills it: builds finished, running and waiting, history.
        try await runBlocking {
            let connection = try PostgresConnection(url: url)
            defer { connection.close() }
            try Migrations.migrate(connection, through: 4)
            #expect(try Migrations.currentVersion(connection) == 4)
            try connection.executeScript("""
                INSERT INTO processor (name) VALUES ('amd64');
                INSERT INTO distribution (name) VALUES ('ubuntu');
                INSERT INTO distroseries (distribution_id, name) VALUES (1, 'noble');
                INSERT INTO distroarchseries (distroseries_id, architecturetag, processor_id) VALUES (1, 'amd64', 1);
                INSERT INTO builder (name, agent_state, last_seen) VALUES ('a1', 'BUILDING', now()), ('a2', 'IDLE', now());
                INSERT INTO builder_processor VALUES (1, 1), (2, 1);
                INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version, status, attempt,
                                   builder_id, date_started, date_finished)
                SELECT 1, 1, 'pkg' || i, '1.0', 'FULLYBUILT', 1, 1, now() - interval '1 hour', now()
                  FROM generate_series(1, 300) i;
                INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version, status, attempt, builder_id)
                VALUES (1, 1, 'running', '1.0', 'BUILDING', 2, 1), (1, 1, 'waiting', '1.0', 'NEEDSBUILD', 0, NULL);
                INSERT INTO buildqueue (build_id, processor_id, state, lastscore, basescore, builder_id, lease_expires)
                VALUES (301, 1, 'RUNNING', 1000, 1000, 1, now() + interval '1 hour'),
                       (302, 1, 'WAITING', 2000, 2000, NULL, NULL);
                INSERT INTO build_event (build_id, status, attempt, builder, message)
                SELECT b.id, s.status, 1, 'a1', NULL FROM build b
                 CROSS JOIN (VALUES ('NEEDSBUILD'), ('BUILDING'), ('FULLYBUILT')) AS s(status) ORDER BY b.id;
                """)
        }
        let store = try await database.store()
        defer { store.shutdown() }
        try await store.database.withConnection { connection in
            #expect(try Migrations.currentVersion(connection) == Migrations.latestVersion)
            let counts = try connection.query("""
                SELECT (SELECT count(*) FROM build) AS builds, (SELECT count(*) FROM build_event) AS events,
                       (SELECT count(*) FROM buildqueue) AS queued,
                       (SELECT string_agg(status, ',' ORDER BY id) FROM build_event WHERE build_id = 7) AS seventh
                """).first
            #expect(try counts?.int("builds") == 302 && counts?.int("events") == 906 && counts?.int("queued") == 2)
            #expect(counts?["seventh"] == "NEEDSBUILD,BUILDING,FULLYBUILT")
            // What the migration is for: no index on a build's status, none on a lease, history keyed by build.
            let indexes = try connection.query("""
                SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('build', 'buildqueue', 'build_event')
                """).rows.map { ($0["indexname"] ?? "", $0["indexdef"] ?? "") }
            #expect(!indexes.contains { $0.1.contains("(status") || $0.1.contains("(lease_expires") }, "\(indexes)")
            #expect(indexes.contains { $0.0 == "build_event_pkey" && $0.1.contains("(build_id, id)") }, "\(indexes)")
        }
        // The store goes on where the old schema left off: the live builds, the waiting one claimed next.
        #expect(try await store.buildCounts() == ["BUILDING": 1, "NEEDSBUILD": 1])
        try await store.database.query("UPDATE builder SET agent_state = 'IDLE', last_seen = now() WHERE name = 'a2'")
        let claimed = try await store.claimJobs(processor: "amd64", lookahead: 0, leaseSeconds: 30, artifactBaseURL: "http://m")
        #expect(claimed.map(\.buildID) == [302] && claimed.first?.attempt == 1)
        #expect(try await store.build(7).build.status == .fullyBuilt)
        await database.drop()
    }
}
