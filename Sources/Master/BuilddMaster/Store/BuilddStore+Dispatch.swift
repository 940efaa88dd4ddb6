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
        // Only plain builds go to the shared queues, and only builders that take the shared queues count
        // as idle for its window (``Placement``); what is addressed to a builder is not in its flight.
        let claimed = try await database.query("""
            WITH header AS MATERIALIZED (
                SELECT p.id, pg_try_advisory_xact_lock(7272, p.id) AS locked,
                       (SELECT count(*) FROM builder_processor bp JOIN builder b ON b.id = bp.builder_id
                         WHERE bp.processor_id = p.id AND \(Self.idleBuilderCondition)
                           AND \(Placement.sqlTakesSharedQueue(builder: "b"))) AS idle,
                       (SELECT count(*) FROM buildqueue WHERE processor_id = p.id AND state = 'DISPATCHED'
                           AND builder_id IS NULL) AS in_flight
                  FROM processor p WHERE p.name = $2),
            picked AS (
                SELECT q.id, q.build_id, q.lastscore FROM buildqueue q
                 WHERE q.processor_id = (SELECT id FROM header) AND q.state = 'WAITING'
                   AND \(Placement.sqlGoesToSharedQueue(build: "q"))
                 ORDER BY q.lastscore DESC, q.id
                 LIMIT (SELECT CASE WHEN NOT locked THEN 0
                               ELSE \(DispatchWindow.sqlExpression(idle: "idle", lookahead: "$3", inFlight: "in_flight")) END
                          FROM header)
                 FOR UPDATE SKIP LOCKED),
            \(Self.claimSteps(picked: "picked", addressee: nil))
            """, [Self.agentSilenceSeconds, processor, lookahead]).rows
        return try await withArchiveSources(
            try Self.jobs(claimed, processor: processor, leaseSeconds: leaseSeconds, artifactBaseURL: artifactBaseURL))
    }

    /// What a claim does with the entries `picked` (columns `id`, `build_id`, `lastscore`), each addressed
    /// to the builder `addressee` (a column of `picked`; nil: the shared queue): the bumped attempts, the
    /// entries DISPATCHED, the history, and one row per job with what it says.
    static func claimSteps(picked: String, addressee: String?) -> String {
        let builder = addressee.map { "(SELECT \($0) FROM \(picked) WHERE \(picked).id = q.id)" } ?? "NULL"
        return """
        bumped AS (
            UPDATE build b SET attempt = b.attempt + 1 WHERE b.id = ANY (ARRAY(SELECT build_id FROM \(picked)))
            RETURNING b.id, b.attempt, b.build_type, b.source_name, b.source_version, b.distroarchseries_id,
                      b.archive_name, b.pocket, b.component, b.archive_purpose, b.arch_indep),
        queued AS (
            UPDATE buildqueue q SET state = 'DISPATCHED', dispatched_at = now(), token_sha256 = NULL,
                   builder_id = \(builder),
                   logtail = NULL, lease_expires = NULL
             WHERE q.id = ANY (ARRAY(SELECT id FROM \(picked)))
            RETURNING q.id, q.build_id, q.lastscore, q.builder_id),
        events AS (
            INSERT INTO build_event (build_id, status, attempt, builder, message)
            SELECT bu.id, 'NEEDSBUILD', bu.attempt, NULL, 'dispatched'
              FROM bumped bu JOIN \(picked) p ON p.build_id = bu.id ORDER BY p.lastscore DESC, p.id)
        SELECT bu.id, bu.attempt, bu.build_type, bu.source_name, bu.source_version, bu.archive_name, bu.pocket,
               bu.component, bu.archive_purpose, bu.arch_indep,
               d.name AS distribution, s.name AS series, das.architecturetag,
               das.chroot_name, das.chroot_sha256, das.chroot_size,
               (SELECT name FROM builder WHERE id = qu.builder_id) AS addressee,
               (SELECT coalesce(json_agg(json_build_object('name', f.name, 'sha256', f.sha256, 'size', f.size)
                                         ORDER BY f.name), '[]')
                  FROM source_file f WHERE f.build_id = bu.id) AS source_files
          FROM bumped bu JOIN queued qu ON qu.build_id = bu.id
          JOIN distroarchseries das ON das.id = bu.distroarchseries_id
          JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
         ORDER BY qu.lastscore DESC, qu.id
        """
    }

    static func jobs(_ claimed: [PostgresRow], processor: String, leaseSeconds: Int,
                     artifactBaseURL: String) throws -> [JobMessage] {
        try addressedJobs(claimed, processor: processor, leaseSeconds: leaseSeconds,
                          artifactBaseURL: artifactBaseURL).map(\.job)
    }

    static func addressedJobs(_ claimed: [PostgresRow], processor: String, leaseSeconds: Int,
                              artifactBaseURL: String) throws -> [(builder: String?, job: JobMessage)] {
        try claimed.map { row in
            let buildID = try row.int64("id")
            let attempt = Int32(try row.int("attempt"))
            let files = try JSONDecoder().decode([FileDigest].self, from: Data(try row.string("source_files").utf8))
            var chroot: FileDigest?
            if let sha256 = row["chroot_sha256"] {
                chroot = FileDigest(name: row["chroot_name"] ?? "chroot.tar", sha256: sha256,
                                    size: row.optionalInt64("chroot_size") ?? 0)
            }
            var job = JobMessage(
                buildID: buildID, attempt: attempt, processor: processor, buildType: try row.string("build_type"),
                distribution: try row.string("distribution"), series: try row.string("series"),
                archTag: try row.string("architecturetag"), sourceName: try row.string("source_name"),
                sourceVersion: try row.string("source_version"), sourceFiles: files,
                uploadURL: "\(artifactBaseURL)/v1/builds/\(buildID)/attempts/\(attempt)/files/",
                leaseSeconds: leaseSeconds, chroot: chroot)
            job.archive = row["archive_name"]
            job.pocket = row["pocket"]
            job.component = row["component"]
            job.archivePrivate = row["archive_purpose"] == ArchivePurpose.private.rawValue
            job.archIndep = try row.bool("arch_indep")
            return (row["addressee"], job)
        }
    }

    /// Claims, for each idle builder of `processor` that does not take the shared queue (not virtualized, or
    /// offering resources), the best waiting build it may take, Launchpad's way (``Placement/assign``), and
    /// returns each job with the builder it is addressed to (published to that builder's control queue,
    /// which no other builder may read). Under the processor's claim lock, as the shared claim.
    public func claimAddressedJobs(processor: String, leaseSeconds: Int,
                                   artifactBaseURL: String) async throws -> [(builder: String, job: JobMessage)] {
        let pairs = try await claimAddressed(processor: processor, leaseSeconds: leaseSeconds, artifactBaseURL: artifactBaseURL)
        let jobs = try await withArchiveSources(pairs.map(\.job))
        return zip(pairs, jobs).map { ($0.builder, $1) }
    }

    private func claimAddressed(processor: String, leaseSeconds: Int,
                                artifactBaseURL: String) async throws -> [(builder: String, job: JobMessage)] {
        try await database.transaction { connection in
            guard let header = try connection.query("""
                SELECT p.id, pg_try_advisory_xact_lock(7272, p.id) AS locked FROM processor p WHERE p.name = $1
                """, [processor]).first, try header.bool("locked") else { return [] }
            let processorID = try header.int("id")
            // Idle, and not already sent a job it has not accepted yet.
            let builderRows = try connection.query("""
                SELECT b.id, b.virtualized, array_to_string(b.open_resources, ',') AS open,
                       array_to_string(b.restricted_resources, ',') AS restricted
                  FROM builder b JOIN builder_processor bp ON bp.builder_id = b.id
                 WHERE bp.processor_id = $2 AND NOT \(Placement.sqlTakesSharedQueue(builder: "b"))
                   AND \(Self.idleBuilderCondition)
                   AND NOT EXISTS (SELECT 1 FROM buildqueue d WHERE d.builder_id = b.id AND d.state = 'DISPATCHED')
                 ORDER BY b.id
                """, [Self.agentSilenceSeconds, processorID]).rows
            guard !builderRows.isEmpty else { return [] }
            let builders = try builderRows.map { (id: try $0.int("id"), placement: try Self.placement($0)) }
            // Each builder's best few, enough that the assignment finds one for each when there is one.
            let candidateRows = try connection.query("""
                SELECT DISTINCT c.id, c.lastscore, c.virtualized, array_to_string(c.constraints, ',') AS constraints
                  FROM builder b, LATERAL (
                        SELECT q.id, q.lastscore, q.virtualized, q.constraints FROM buildqueue q
                         WHERE q.processor_id = $2 AND q.state = 'WAITING' AND \(Placement.sqlCondition(build: "q", builder: "b"))
                         ORDER BY q.lastscore DESC, q.id LIMIT $3) c
                 WHERE b.id = ANY ($1::int[])
                 ORDER BY c.lastscore DESC, c.id
                """, [PostgresArray(builders.map(\.id)), processorID, builders.count]).rows
            let candidates = try candidateRows.map {
                (id: try $0.int64("id"), requirements: BuildRequirements(
                    virtualized: try $0.bool("virtualized"), constraints: Self.resources($0["constraints"])))
            }
            let pairs = Placement.assign(builders: builders, candidates: candidates)
            guard !pairs.isEmpty else { return [] }
            let claimed = try connection.query("""
                WITH picked AS MATERIALIZED (
                    SELECT q.id, q.build_id, q.lastscore, a.builder_id
                      FROM unnest($1::bigint[], $2::int[]) AS a(queue_id, builder_id)
                      JOIN buildqueue q ON q.id = a.queue_id AND q.state = 'WAITING'
                     ORDER BY q.id FOR UPDATE OF q),
                \(Self.claimSteps(picked: "picked", addressee: "builder_id"))
                """, [PostgresArray(pairs.map(\.candidate)), PostgresArray(pairs.map(\.builder))]).rows
            return try Self.addressedJobs(claimed, processor: processor, leaseSeconds: leaseSeconds,
                                          artifactBaseURL: artifactBaseURL).compactMap { pair in
                pair.builder.map { ($0, pair.job) }
            }
        }
    }

    /// Puts a claimed build back to WAITING when its job could not be published (the attempt stays used):
    /// ``LifecycleCore/releaseClaim(_:attempt:)`` decides. Returns whether it was released.
    @discardableResult
    public func releaseClaim(buildID: Int64, attempt: Int32) async throws -> Bool {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [], builderIDs: [], buildIDs: [buildID], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let released = core.releaseClaim(buildID, attempt: attempt)
            try Self.write(core, on: connection)
            return released
        }
    }

    /// Claims whose job was not accepted within `timeout` go back to WAITING, to be claimed again with a
    /// new attempt. This covers a master that died between commit and publish, a lost message and an
    /// agent that died holding the job. The query only picks candidates (``claimExpiredCondition``, checked
    /// against the core by a test); ``LifecycleCore/reclaimExpiredClaims(acceptTimeout:)`` decides, on rows
    /// read and locked as an event batch's are. Returns the build ids.
    public func expireClaims(olderThanSeconds timeout: Int) async throws -> [Int64] {
        try await decide(over: """
            SELECT q.build_id FROM buildqueue q WHERE \(Self.claimExpiredCondition) ORDER BY q.build_id LIMIT 500
            """, [timeout]) { $0.reclaimExpiredClaims(acceptTimeout: Double(timeout)) }
    }

    /// Running builds whose lease ran out (their agent went silent) are failures: counted and requeued.
    /// Cancelling builds whose agent never confirmed end CANCELLED and count against the builder.
    /// Returns (build, attempt, builder) of each. The rows are read and locked as an event batch's are, and
    /// each build is judged by the ``LifecycleCore`` (``BuildLifecycle/tick(now:acceptTimeout:)``); the
    /// query only picks candidates (``leaseExpiredCondition``, checked against the core by a test).
    public func expireLeases() async throws -> [(buildID: Int64, attempt: Int, builder: String)] {
        try await decide(over: """
            SELECT q.build_id, q.builder_id FROM buildqueue q WHERE \(Self.leaseExpiredCondition)
             ORDER BY q.lease_expires LIMIT 100
            """) { $0.expireLeases().map { ($0.buildID, Int($0.attempt), $0.builder) } }
    }

    /// A watchdog pass of the core's: `query` picks candidates (column `build_id`, and `builder_id` where the
    /// pass needs the builder), their rows are read and locked as an event batch's, `decide` runs the core
    /// over them, and what it decided is written, all in one transaction. The query decides nothing: the core
    /// judges each row again as it is once locked.
    func decide<T: Sendable>(over query: String, _ parameters: [Int] = [],
                             _ decide: @escaping @Sendable (inout LifecycleCore) -> [T]) async throws -> [T] {
        try await database.transaction { connection in
            let due = try connection.query(query, parameters).rows
            guard !due.isEmpty else { return [] }
            var core = try Self.loadCore(builderNames: [], builderIDs: due.compactMap { $0["builder_id"].flatMap(Int.init) },
                                         buildIDs: try due.map { try $0.int64("build_id") }, filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let decided = decide(&core)
            try Self.write(core, on: connection)
            return decided
        }
    }

    /// Claims not accepted within `$1` seconds, on `buildqueue q`: the rule of
    /// ``BuildLifecycle/tick(now:acceptTimeout:)`` for a dispatched build, as SQL (checked against the core).
    static let claimExpiredCondition = "q.state = 'DISPATCHED' AND q.dispatched_at < now() - make_interval(secs => $1)"

    /// The queue entries whose lease (running) or abort deadline (cancelling) ran out, on `buildqueue q`:
    /// the rule of ``BuildLifecycle/tick(now:acceptTimeout:)`` for those states, as SQL.
    static let leaseExpiredCondition = "\(QueueRecord.State.sqlHolds("q.state")) AND q.lease_expires < now()"
}
