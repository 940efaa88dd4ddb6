#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import BuilddMasterKit
import BuilddShared
import Postgres
import Synchronization

/// The farm the benchmarks drive: one processor and arch series, simulated builders, bulk-queued builds.
struct BenchFarm {
    static let processor = "benchcpu"
    static let distribution = "ubuntu"
    static let series = "noble"
    static let archTag = "benchcpu"

    let store: BuilddStore
    var database: PostgresDatabase { store.database }

    init(databaseURL: String) {
        store = BuilddStore(url: databaseURL, connections: 2, applicationName: "buildd-bench")
    }

    /// The processor, its arch series and `count` agent builders named `<prefix>NNNNN` (idempotent; the
    /// builders are made usable again and forget earlier runs).
    func prepare(builderPrefix: String, count: Int) async throws -> [String] {
        // The benchmarks change builders and queue rows freely: never on a farm's real database.
        let foreign = try await self.count("""
            SELECT count(*) AS n FROM builder
             WHERE name !~ '^(dispatch|flow|depth|fleet)-[0-9]{5}$' AND name <> 'rss-agent'
            """)
        guard foreign == 0 else {
            throw BenchError("this database has \(foreign) builder(s) the benchmark did not make: "
                             + "run buildd-bench on a database of its own (deploy/localfarm bench does)")
        }
        _ = try await store.addProcessor(Self.processor)
        do {
            try await store.addArchSeries(distribution: Self.distribution, series: Self.series, archTag: Self.archTag,
                                          processor: Self.processor)
        } catch let error as StoreError where error.code == .alreadyExists {}
        try await database.transaction { connection in
            try connection.execute("""
                INSERT INTO builder (name) SELECT $1 || lpad(g::text, 5, '0') FROM generate_series(1, $2) g
                ON CONFLICT (name) DO NOTHING
                """, [builderPrefix, count])
            try connection.execute("""
                INSERT INTO builder_processor (builder_id, processor_id)
                SELECT b.id, p.id FROM builder b, processor p WHERE b.name LIKE $1 || '%' AND p.name = $2
                ON CONFLICT DO NOTHING
                """, [builderPrefix, Self.processor])
            try connection.execute("""
                UPDATE builder SET builderok = true, failnotes = NULL, failure_count = 0, manual = false, active = true,
                       agent_state = NULL, last_seen = NULL, agent_session = NULL, last_seq = 0
                 WHERE name LIKE $1 || '%'
                """, [builderPrefix])
        }
        return (1...count).map { builderPrefix + String(repeating: "0", count: max(0, 5 - String($0).count)) + String($0) }
    }

    /// Queues `count` builds of the bench arch series in one statement per 100,000 (the score of each is
    /// `score`, or random in 0..<2000 when nil); returns the id range.
    func queueBuilds(_ count: Int, score: Int?, label: String) async throws -> ClosedRange<Int64> {
        var first: Int64?
        var last: Int64 = 0
        var done = 0
        while done < count {
            let chunk = min(100_000, count - done)
            let range = try await database.transaction { connection in
                guard let das = try connection.query("""
                    SELECT das.id, das.processor_id FROM distroarchseries das
                      JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
                     WHERE d.name = $1 AND s.name = $2 AND das.architecturetag = $3
                    """, [Self.distribution, Self.series, Self.archTag]).first
                else { throw BenchError("no arch series \(Self.distribution)/\(Self.series)/\(Self.archTag): call prepare first") }
                let row = try connection.query("""
                    WITH b AS (
                        INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version)
                        SELECT $1, $2, $3, '1.0-' || g FROM generate_series(1, $4) g RETURNING id)
                    , q AS (
                        INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore)
                        SELECT id, $2, s, s FROM (SELECT id, coalesce($5::int, (random() * 2000)::int) AS s FROM b) x
                        RETURNING build_id)
                    SELECT min(build_id) AS lo, max(build_id) AS hi FROM q
                    """, [try das.int("id"), try das.int("processor_id"), label, chunk, score]).first!
                return (try row.int64("lo"), try row.int64("hi"))
            }
            first = first ?? range.0
            last = range.1
            done += chunk
            if count > 100_000 { progress("queued \(done) of \(count) builds") }
        }
        // A farm's tables have statistics (autovacuum analyzes them within a minute of a load); a bulk load
        // measured at once would otherwise be planned as if the queue were empty.
        _ = try await database.query("ANALYZE build, buildqueue")
        return first!...last
    }

    func count(_ sql: String, _ parameters: [(any PostgresBindable)?] = []) async throws -> Int {
        try await database.query(sql, parameters).first!.int("n")
    }

    func waitingBuilds() async throws -> Int {
        try await count("""
            SELECT count(*) AS n FROM buildqueue q JOIN processor p ON p.id = q.processor_id
             WHERE p.name = $1 AND q.state = 'WAITING'
            """, [Self.processor])
    }

    /// Waits until the master has applied the hello of every one of `names` (they count as idle).
    func waitUntilIdle(_ names: [String], since session: String) async throws {
        try await waitFor("agents' hello applied", timeout: 120) {
            let seen = try await count("""
                SELECT count(*) AS n FROM builder WHERE name = ANY($1::text[]) AND agent_state = 'IDLE'
                   AND agent_session LIKE $2 || '%'
                """, ["{" + names.joined(separator: ",") + "}", session])
            return (seen == names.count, "\(seen) of \(names.count)")
        }
    }
}

/// Build ids mapped to the monotonic time their job reached the simulated farm.
final class Arrivals: Sendable {
    private let times = Mutex<[Int64: Double]>([:])

    func record(_ job: JobMessage, at time: Double) { times.withLock { $0[job.buildID] = time } }

    func arrival(of build: Int64) -> Double? { times.withLock { $0[build] } }

    /// Waits for the job of `build`.
    func wait(for build: Int64, timeout: Double = 30) async throws -> Double {
        let start = now()
        while true {
            if let time = arrival(of: build) { return time }
            if now() - start > timeout { throw BenchError("the job of build \(build) did not arrive within \(Int(timeout)) s") }
            try await Task.sleep(for: .microseconds(200))
        }
    }
}
