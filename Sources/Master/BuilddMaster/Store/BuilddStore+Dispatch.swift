#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import BuilddShared
import Postgres

extension BuilddStore {
    /// Claims the best waiting builds of `processor`, at most its dispatch window: idle builders plus
    /// `lookahead`, less what is already published and not yet accepted. Each claim bumps the build's
    /// attempt (the fencing token). A job carries no secret: the builder that accepts it declares its own
    /// upload key (``AttemptCredential``). Returns the jobs to publish after commit.
    ///
    /// Masters that call this at once for the same processor do not wait on each other: one takes the
    /// processor's transaction-scoped advisory lock, the others return no jobs and try again later.
    public func claimJobs(processor: String, lookahead: Int, leaseSeconds: Int, artifactBaseURL: String) async throws -> [JobMessage] {
        // One statement, so one round trip and its own transaction: the processor's try-lock (held until
        // the statement ends), its window (as above, and nothing while no builder is idle), the claim, the
        // bumped attempts, the history and what each job
        // says, its source files included. The claimed rows are looked up through `= ANY (ARRAY(...))`:
        // the planner cannot know how many the window lets through and, joining, would scan the whole
        // build table.
        let claimed = try await database.query("""
            WITH header AS MATERIALIZED (
                SELECT p.id, pg_try_advisory_xact_lock(7272, p.id) AS locked,
                       (SELECT count(*) FROM builder_processor bp JOIN builder b ON b.id = bp.builder_id
                         WHERE bp.processor_id = p.id AND \(Self.idleBuilderCondition)) AS idle,
                       (SELECT count(*) FROM buildqueue WHERE processor_id = p.id AND state = 'DISPATCHED') AS in_flight
                  FROM processor p WHERE p.name = $2),
            picked AS (
                SELECT id, build_id, lastscore FROM buildqueue
                 WHERE processor_id = (SELECT id FROM header) AND state = 'WAITING'
                 ORDER BY lastscore DESC, id
                 LIMIT (SELECT CASE WHEN NOT locked THEN 0
                               ELSE \(DispatchWindow.sqlExpression(idle: "idle", lookahead: "$3", inFlight: "in_flight")) END
                          FROM header)
                 FOR UPDATE SKIP LOCKED),
            bumped AS (
                UPDATE build b SET attempt = b.attempt + 1 WHERE b.id = ANY (ARRAY(SELECT build_id FROM picked))
                RETURNING b.id, b.attempt, b.build_type, b.source_name, b.source_version, b.distroarchseries_id),
            queued AS (
                UPDATE buildqueue q SET state = 'DISPATCHED', dispatched_at = now(), token_sha256 = NULL,
                       builder_id = NULL, logtail = NULL, lease_expires = NULL
                 WHERE q.id = ANY (ARRAY(SELECT id FROM picked))
                RETURNING q.id, q.build_id, q.lastscore),
            events AS (
                INSERT INTO build_event (build_id, status, attempt, builder, message)
                SELECT bu.id, 'NEEDSBUILD', bu.attempt, NULL, 'dispatched'
                  FROM bumped bu JOIN picked p ON p.build_id = bu.id ORDER BY p.lastscore DESC, p.id)
            SELECT bu.id, bu.attempt, bu.build_type, bu.source_name, bu.source_version,
                   d.name AS distribution, s.name AS series, das.architecturetag,
                   das.chroot_name, das.chroot_sha256, das.chroot_size,
                   (SELECT coalesce(json_agg(json_build_object('name', f.name, 'sha256', f.sha256, 'size', f.size)
                                             ORDER BY f.name), '[]')
                      FROM source_file f WHERE f.build_id = bu.id) AS source_files
              FROM bumped bu JOIN queued qu ON qu.build_id = bu.id
              JOIN distroarchseries das ON das.id = bu.distroarchseries_id
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             ORDER BY qu.lastscore DESC, qu.id
            """, [Self.agentSilenceSeconds, processor, lookahead]).rows
        return try claimed.map { row in
            let buildID = try row.int64("id")
            let attempt = Int32(try row.int("attempt"))
            let files = try JSONDecoder().decode([FileDigest].self, from: Data(try row.string("source_files").utf8))
            var chroot: FileDigest?
            if let sha256 = row["chroot_sha256"] {
                chroot = FileDigest(name: row["chroot_name"] ?? "chroot.tar", sha256: sha256,
                                    size: row.optionalInt64("chroot_size") ?? 0)
            }
            return JobMessage(
                buildID: buildID, attempt: attempt, processor: processor, buildType: try row.string("build_type"),
                distribution: try row.string("distribution"), series: try row.string("series"),
                archTag: try row.string("architecturetag"), sourceName: try row.string("source_name"),
                sourceVersion: try row.string("source_version"), sourceFiles: files,
                uploadURL: "\(artifactBaseURL)/v1/builds/\(buildID)/attempts/\(attempt)/files/",
                leaseSeconds: leaseSeconds, chroot: chroot)
        }
    }

    /// Puts a claimed build back to WAITING when its job could not be published (the attempt stays used).
    public func releaseClaim(buildID: Int64, attempt: Int32) async throws {
        try await database.query("""
            UPDATE buildqueue q SET state = 'WAITING', dispatched_at = NULL, token_sha256 = NULL
              FROM build b WHERE b.id = q.build_id AND q.build_id = $1 AND q.state = 'DISPATCHED' AND b.attempt = $2
            """, [buildID, attempt])
    }

    /// Claims whose job was not accepted within `timeout` go back to WAITING, to be claimed again with a
    /// new attempt. This covers a master that died between commit and publish, a lost message and an
    /// agent that died holding the job. Returns the build ids.
    public func expireClaims(olderThanSeconds timeout: Int) async throws -> [Int64] {
        try await database.query("""
            UPDATE buildqueue SET state = 'WAITING', dispatched_at = NULL, token_sha256 = NULL
             WHERE id IN (SELECT q.id FROM buildqueue q WHERE \(Self.claimExpiredCondition) FOR UPDATE SKIP LOCKED)
            RETURNING build_id
            """, [timeout]).rows.map { try $0.int64("build_id") }
    }

    /// Running builds whose lease ran out (their agent went silent) are failures: counted and requeued.
    /// Cancelling builds whose agent never confirmed end CANCELLED and count against the builder.
    /// Returns (build, attempt, builder) of each. The rows are read and locked as an event batch's are, and
    /// each build is judged by the ``LifecycleCore`` (``BuildLifecycle/tick(now:acceptTimeout:)``); the
    /// query only picks candidates (``leaseExpiredCondition``, checked against the core by a test).
    public func expireLeases() async throws -> [(buildID: Int64, attempt: Int, builder: String)] {
        try await database.transaction { connection in
            let due = try connection.query("""
                SELECT q.build_id, q.builder_id FROM buildqueue q WHERE \(Self.leaseExpiredCondition)
                 ORDER BY q.lease_expires LIMIT 100
                """).rows
            guard !due.isEmpty else { return [] }
            var core = try Self.loadCore(builderNames: [], builderIDs: due.compactMap { $0["builder_id"].flatMap(Int.init) },
                                         buildIDs: try due.map { try $0.int64("build_id") }, filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let expired = core.expireLeases()
            try Self.write(core, on: connection)
            return expired.map { ($0.buildID, Int($0.attempt), $0.builder) }
        }
    }

    /// Claims not accepted within `$1` seconds, on `buildqueue q`: the rule of
    /// ``BuildLifecycle/tick(now:acceptTimeout:)`` for a dispatched build, as SQL (checked against the core).
    static let claimExpiredCondition = "q.state = 'DISPATCHED' AND q.dispatched_at < now() - make_interval(secs => $1)"

    /// The queue entries whose lease (running) or abort deadline (cancelling) ran out, on `buildqueue q`:
    /// the rule of ``BuildLifecycle/tick(now:acceptTimeout:)`` for those states, as SQL.
    static let leaseExpiredCondition = "q.state IN ('RUNNING', 'CANCELLING') AND q.lease_expires < now()"
}
