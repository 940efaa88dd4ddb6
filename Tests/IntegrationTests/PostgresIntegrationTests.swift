import BuilddShared
import Logging
import Postgres
import Testing

@Suite(.timeLimit(.minutes(5))) struct PostgresIntegrationTests {
    @Test func parametersAreNeverSplicedIntoSQL() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let db = PostgresDatabase(url: database.url, connections: 2)
        defer { db.shutdown() }
        try await db.query("CREATE TABLE t (id serial PRIMARY KEY, name text UNIQUE, n bigint)")
        let nasty = "x'); DROP TABLE t; --"
        try await db.query("INSERT INTO t (name, n) VALUES ($1, $2)", [nasty, Int64(1) << 40])
        try await db.query("INSERT INTO t (name, n) VALUES ($1, $2)", ["null value", nil])
        let rows = try await db.query("SELECT name, n FROM t ORDER BY id").rows
        #expect(rows.count == 2)
        #expect(rows[0]["name"] == nasty)
        #expect(try rows[0].int64("n") == 1 << 40)
        #expect(rows[1]["n"] == nil)
    }

    @Test func serverErrorsCarrySQLState() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let db = PostgresDatabase(url: database.url, connections: 1)
        defer { db.shutdown() }
        try await db.query("CREATE TABLE u (name text UNIQUE CHECK (name <> 'forbidden'))")
        try await db.query("INSERT INTO u VALUES ('a')")
        do {
            try await db.query("INSERT INTO u VALUES ('a')")
            Issue.record("duplicate accepted")
        } catch let error as PostgresError {
            #expect(error.kind == .server)
            #expect(error.sqlState == "23505")
            #expect(error.isUniqueViolation)
            #expect(error.message.contains("duplicate key"))
        }
        await #expect(throws: PostgresError.self) { try await db.query("INSERT INTO u VALUES ('forbidden')") }
        do {
            try await db.query("SELEKT 1")
        } catch let error as PostgresError {
            #expect(error.sqlState == "42601")
        }
        // The connection is still usable after errors.
        #expect(try await db.query("SELECT count(*) AS n FROM u").first?.int("n") == 1)
    }

    /// Statements are prepared once per connection; a statement that cannot be prepared reports its own
    /// error (not "transaction aborted"), inside a transaction too, and prepared statements keep working
    /// after a table changed and on a connection made again.
    @Test func preparedStatementsReportTheirOwnErrorsAndSurviveChanges() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let db = PostgresDatabase(url: database.url, connections: 1)
        defer { db.shutdown() }
        try await db.query("CREATE TABLE p (id serial PRIMARY KEY, name text)")
        for index in 0..<3 { try await db.query("INSERT INTO p (name) VALUES ($1)", ["row \(index)"]) }
        let insideTransaction: PostgresError? = await {
            do {
                try await db.transaction { connection in
                    _ = try connection.query("SELECT missing_column FROM p WHERE id = $1", [1])
                }
                return nil
            } catch { return error as? PostgresError }
        }()
        #expect(insideTransaction?.sqlState == "42703", "undefined column, reported as itself")
        // The same connection is usable afterwards, and the statements prepared before still run.
        #expect(try await db.query("SELECT count(*) AS n FROM p WHERE id > $1", [0]).first?.int("n") == 3)
        try await db.query("ALTER TABLE p ADD COLUMN extra integer DEFAULT 7")
        #expect(try await db.query("SELECT count(*) AS n FROM p WHERE id > $1", [0]).first?.int("n") == 3)
        try await db.query("INSERT INTO p (name) VALUES ($1)", ["after alter"])
        #expect(try await db.query("SELECT extra FROM p WHERE name = $1", ["after alter"]).first?.int("extra") == 7)
    }

    /// A statement run with `prepare: false` is planned for its values each time and kept nowhere; the others are
    /// prepared once per connection.
    @Test func anUnpreparedStatementIsPlannedForItsValuesAndNotKept() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let db = PostgresDatabase(url: database.url, connections: 1)
        defer { db.shutdown() }
        try await db.query("CREATE TABLE q (id serial PRIMARY KEY, owner integer)")
        try await db.query("INSERT INTO q (owner) SELECT i % 3 FROM generate_series(1, 30) i")
        for _ in 0..<7 {
            #expect(try await db.query("SELECT count(*) AS n FROM q WHERE owner = $1", [1], prepare: false).first?.int("n") == 10)
        }
        #expect(try await db.query("SELECT count(*) AS n FROM q WHERE id > $1", [0]).first?.int("n") == 30)
        let kept = try await db.query("SELECT statement FROM pg_prepared_statements").rows.map { try $0.string("statement") }
        #expect(kept.contains { $0.contains("id > $1") }, "the ordinary statement is prepared: \(kept)")
        #expect(!kept.contains { $0.contains("owner = $1") }, "the unprepared one is not: \(kept)")
    }

    @Test func transactionsRollBackWhenTheBodyThrows() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let db = PostgresDatabase(url: database.url, connections: 1)
        defer { db.shutdown() }
        try await db.query("CREATE TABLE v (n int)")
        struct Boom: Error {}
        await #expect(throws: Boom.self) {
            try await db.transaction { connection in
                try connection.execute("INSERT INTO v VALUES (1)")
                throw Boom()
            }
        }
        try await db.transaction { try $0.execute("INSERT INTO v VALUES (2)") }
        #expect(try await db.query("SELECT array_agg(n)::text AS a FROM v").first?["a"] == "{2}")
    }

    @Test func listenReceivesNotifications() async throws {
        let database = try await TestDatabase.create()
        defer { Task { await database.drop() } }
        let listener = PostgresListener(url: database.url, channels: ["buildd_test"], logger: Logger(label: "test"))
        defer { listener.shutdown() }
        let notifications = listener.notifications
        let connected = try await within(.seconds(15), waitingFor: "the listener to connect") {
            var iterator = notifications.makeAsyncIterator()
            return await iterator.next()
        }
        #expect(connected?.channel == "")
        let db = PostgresDatabase(url: database.url, connections: 1)
        defer { db.shutdown() }
        try await db.query("SELECT pg_notify('buildd_test', $1)", ["hello"])
        let notification = try await within(.seconds(15), waitingFor: "the notification") {
            var iterator = notifications.makeAsyncIterator()
            return await iterator.next()
        }
        #expect(notification == PostgresNotification(channel: "buildd_test", payload: "hello"))
    }

    @Test func connectionErrorsDoNotShowThePassword() async throws {
        let admin = try TestEnvironment.adminDatabaseURL
        let url = admin.replacingOccurrences(of: "postgres@", with: "nobody:sekrit-pw@")
            .replacingOccurrences(of: "/postgres", with: "/no_such_db")
        let db = PostgresDatabase(url: url, connections: 1)
        defer { db.shutdown() }
        do {
            try await db.query("SELECT 1")
            Issue.record("connected with a wrong user")
        } catch let error as PostgresError {
            #expect(error.kind == .connection)
            #expect(!error.description.contains("sekrit-pw"))
        }
    }
}
