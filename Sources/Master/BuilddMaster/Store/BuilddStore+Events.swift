import BuilddShared
import Postgres

extension BuilddStore {
    /// Applies one agent event in one transaction (see ``apply(reports:leaseSeconds:recordingFiles:)``).
    ///
    /// - Parameters:
    ///   - userID: the AMQP `user_id` the broker validated; must own the builder when it has a broker user.
    ///   - leaseSeconds: how long a heartbeat keeps a build's lease.
    ///   - legacy: the event comes from this master's legacy adapter, speaking for an XML-RPC builder.
    ///   - recordingFiles: record the event's files and log as this attempt's (in the same transaction) before
    ///     applying it: the legacy adapter stores what it fetched itself.
    /// - Throws: `WireError` when the event lacks a field its kind needs.
    public func apply(_ event: AgentEvent, userID: String?, leaseSeconds: Int, legacy: Bool = false,
                      recordingFiles: Bool = false) async throws -> EventOutcome {
        let report = try event.report(sender: legacy ? .legacyAdapter : .agent(user: userID))
        return try await apply(reports: [report], leaseSeconds: leaseSeconds, recordingFiles: recordingFiles)[0]
    }

    /// Applies a batch of reports in one transaction with a fixed number of statements, however many
    /// reports it holds: every row they touch is read and locked in one global order (builders, then queue
    /// entries, then builds, each by id), the ``LifecycleCore`` decides every transition in memory, report
    /// by report in the order given (each builder's order is the order of its shard), and each kind of
    /// change is written for the whole batch in one statement. Events of one builder must come in order;
    /// `(session, seq)` makes a replay harmless and `(build, attempt)` fences off everything an old attempt
    /// says. Either every report counts or, when this throws, none.
    public func apply(reports: [BuilderReport], leaseSeconds: Int, recordingFiles: Bool = false) async throws -> [EventOutcome] {
        guard !reports.isEmpty else { return [] }
        return try await database.transaction { connection in
            if recordingFiles {
                // Builders first, as every transaction that changes a build takes them: recording a file
                // already locks its build (for key share).
                _ = try connection.query("SELECT id FROM builder WHERE name = ANY ($1::text[]) ORDER BY id FOR UPDATE",
                                         [PostgresArray(reports.map(\.builder))])
                try Self.recordFiles(of: reports, on: connection)
            }
            var core = try Self.loadCore(builderNames: reports.map(\.builder), builderIDs: [],
                                         buildIDs: reports.compactMap { $0.event.attempt?.build },
                                         filesOf: reports.compactMap(Self.declaredFiles),
                                         leaseSeconds: leaseSeconds, on: connection)
            let outcomes = reports.map { core.apply($0) }
            try Self.write(core, on: connection)
            return outcomes
        }
    }

    /// The attempt whose stored files a report's `finished` must be checked against, if it declares any.
    static func declaredFiles(_ report: BuilderReport) -> AttemptRef? {
        if case .finished(let ref, _, let files, let log) = report.event, !files.isEmpty || log != nil { return ref }
        return nil
    }

    /// The legacy adapter fetched the files itself: they are this attempt's before `finished` is applied.
    static func recordFiles(of reports: [BuilderReport], on connection: PostgresConnection) throws {
        for report in reports {
            guard case .finished(let ref, _, let files, let log) = report.event else { continue }
            for (file, kind) in files.map({ ($0, "result") }) + (log.map { [($0, "log")] } ?? []) {
                try recordFile(connection, buildID: ref.build, attempt: ref.attempt, name: file.name, kind: kind,
                               sha256: file.sha256, size: file.size)
            }
        }
    }

    /// Reads and locks every row a batch may touch: the named builders (and those with the given ids),
    /// the queue entries and builds named, the builds those builders hold, and the stored files of the
    /// attempts given. Three round trips at most, whatever the batch's size; the time is the database's.
    static func loadCore(builderNames: [String], builderIDs: [Int], buildIDs: [Int64], filesOf attempts: [AttemptRef],
                         leaseSeconds: Int, on connection: PostgresConnection) throws -> LifecycleCore {
        let builderRows = try connection.query("""
            SELECT id, name, kind, broker_user, active, manual, agent_session, last_seq, agent_state, clean_status,
                   failure_count, builderok, failnotes, idle_faults, virtualized, array_to_string(open_resources, ',') AS open,
                   array_to_string(restricted_resources, ',') AS restricted, reset_method, reset_target, reset_protocol,
                   reset_timeout, extract(epoch FROM reset_deadline) AS reset_deadline, reset_attempt,
                   extract(epoch FROM now()) AS now
              FROM builder
             WHERE id = ANY (ARRAY(SELECT id FROM builder WHERE name = ANY ($1::text[]) UNION SELECT unnest($2::int[])))
             ORDER BY id FOR UPDATE
            """, [PostgresArray(Array(Set(builderNames))), PostgresArray(builderIDs)]).rows
        let now: Double
        if let first = builderRows.first {
            now = try first.double("now")
        } else {
            now = try connection.query("SELECT extract(epoch FROM now()) AS now").first!.double("now")
        }
        let builders = try builderRows.map { row in
            var record = BuilderRecord(
                id: try row.int("id"), name: try row.string("name"),
                kind: try Self.known(BuilderKind.self, row, "kind"), brokerUser: row["broker_user"],
                active: try row.bool("active"), manual: try row.bool("manual"), session: row["agent_session"],
                lastSeq: try row.int64("last_seq"), agentState: row["agent_state"].flatMap(AgentState.init(rawValue:)),
                cleanStatus: try Self.cleanStatus(row),
                standing: BuilderStanding(failures: try row.int("failure_count"), ok: try row.bool("builderok"),
                                          notes: row["failnotes"]))
            record.standing.idleFaults = try row.int("idle_faults")
            record.placement = try Self.placement(row)
            record.reset = try Self.resetPlan(row)
            record.resetDeadline = row.optionalDouble("reset_deadline")
            record.resetAttempt = try row.int("reset_attempt")
            return record
        }
        // Queue entries before builds, as the claim takes them: no two transactions wait on each other in a ring.
        // Rows are found through `= ANY (ARRAY(...))`, by key: an `OR` of two lookups would read the whole table.
        let buildRows = try connection.query("""
            WITH q AS MATERIALIZED (
                SELECT build_id, state, builder_id, extract(epoch FROM dispatched_at) AS dispatched,
                       extract(epoch FROM lease_expires) AS lease, extract(epoch FROM abort_sent_at) AS abort_sent,
                       basescore, lastscore, manual, extract(epoch FROM date_queued) AS queued
                  FROM buildqueue
                 WHERE build_id = ANY (ARRAY(
                        SELECT unnest($1::bigint[]) UNION
                        SELECT build_id FROM buildqueue WHERE builder_id = ANY ($2::int[])
                           AND \(QueueRecord.State.sqlHolds("state"))))
                 ORDER BY build_id FOR UPDATE)
            SELECT b.id, b.attempt, b.status, b.builder_id AS build_builder, b.failure_count, b.failnotes, b.result,
                   b.log_name, b.log_sha256, extract(epoch FROM b.date_started) AS started,
                   b.require_virtualized, array_to_string(b.constraints, ',') AS constraints,
                   b.processor_id, b.urgency, b.pocket, b.component, b.archive_purpose,
                   q.state, q.builder_id, q.dispatched, q.lease, q.abort_sent, q.basescore, q.lastscore, q.manual, q.queued
              FROM build b LEFT JOIN q ON q.build_id = b.id
             WHERE b.id = ANY (ARRAY(SELECT unnest($1::bigint[]) UNION SELECT build_id FROM q))
             ORDER BY b.id FOR UPDATE OF b
            """, [PostgresArray(Array(Set(buildIDs))), PostgresArray(builders.map(\.id))]).rows
        let builds = try buildRows.map { row in
            var queue: QueueRecord?
            if row["state"] != nil {
                let state = try Self.known(QueueRecord.State.self, row, "state")
                guard let phase = QueueRecord.Phase.stored(
                    state: state, builder: row["builder_id"].flatMap(Int.init), dispatchedAt: row.optionalDouble("dispatched"),
                    leaseUntil: row.optionalDouble("lease")) else {
                    throw StoreError(.invalid, "build \(try row.int64("id"))'s queue entry is \(state.rawValue) without "
                                     + "the builder, claim time or lease that state needs")
                }
                var entry = QueueRecord(phase)
                entry.abortSentAt = row.optionalDouble("abort_sent")
                entry.score = QueueScore(base: try row.int("basescore"), last: try row.int("lastscore"),
                                         manual: try row.bool("manual"), queuedAt: try row.double("queued"))
                queue = entry
            }
            var record = BuildRecord(
                id: try row.int64("id"), attempt: Int32(try row.int("attempt")),
                status: try Self.known(BuildStatus.self, row, "status"),
                builderID: row["build_builder"].flatMap(Int.init),
                job: JobStanding(failures: try row.int("failure_count"), notes: row["failnotes"]),
                result: row["result"].flatMap(BuilderResult.init(rawValue:)), logName: row["log_name"],
                logSHA256: row["log_sha256"], startedAt: row.optionalDouble("started"), queue: queue)
            record.requirements = BuildRequirements(virtualized: try row.bool("require_virtualized"),
                                                    constraints: Self.resources(row["constraints"]))
            record.scoring = BuildScoring(
                processor: try row.int("processor_id"), urgency: try Self.known(Urgency.self, row, "urgency"),
                pocket: try Self.known(Pocket.self, row, "pocket"), component: try Self.known(Component.self, row, "component"),
                archive: try Self.known(ArchivePurpose.self, row, "archive_purpose"))
            return record
        }
        var stored: [AttemptRef: [FileDigest]] = [:]
        if !attempts.isEmpty {
            let rows = try connection.query("""
                SELECT f.build_id, f.attempt, f.name, f.sha256, f.size
                  FROM build_file f JOIN unnest($1::bigint[], $2::int[]) AS x(build_id, attempt)
                    ON f.build_id = x.build_id AND f.attempt = x.attempt
                """, [PostgresArray(attempts.map(\.build)), PostgresArray(attempts.map(\.attempt))]).rows
            for row in rows {
                let ref = AttemptRef(build: try row.int64("build_id"), attempt: Int32(try row.int("attempt")))
                stored[ref, default: []].append(FileDigest(name: try row.string("name"), sha256: try row.string("sha256"),
                                                           size: try row.int64("size")))
            }
        }
        return LifecycleCore(builders: builders, builds: builds, storedFiles: stored, now: now,
                             leaseSeconds: Double(leaseSeconds))
    }

    /// A column's value as one of the core's enumerations; a value the core does not know is an error, never a
    /// default.
    static func known<T: RawRepresentable>(_ type: T.Type, _ row: PostgresRow, _ column: String) throws -> T
        where T.RawValue == String {
        let stored = try row.string(column)
        guard let value = T(rawValue: stored) else { throw StoreError(.invalid, "unknown \(column) '\(stored)'") }
        return value
    }

    /// A set of resource names read as `array_to_string(column, ',')` (names hold no comma).
    static func resources(_ joined: String?) -> Set<String> {
        Set((joined ?? "").split(separator: ",").map(String.init))
    }

    /// A builder's placement from columns `virtualized`, `open` and `restricted` (as ``resources(_:)`` reads them).
    static func cleanStatus(_ row: PostgresRow) throws -> CleanStatus {
        let stored = try row.string("clean_status")
        guard let status = CleanStatus(rawValue: stored) else { throw StoreError(.invalid, "unknown clean status \(stored)") }
        return status
    }

    /// A builder's reset (columns `reset_method`, `reset_target`, `reset_protocol`, `reset_timeout`).
    static func resetPlan(_ row: PostgresRow) throws -> ResetPlan {
        let method = try row.string("reset_method"), resetProtocol = try row.string("reset_protocol")
        guard let known = ResetMethod(rawValue: method), let proto = ResetProtocol(rawValue: resetProtocol) else {
            throw StoreError(.invalid, "unknown reset method \(method) or protocol \(resetProtocol)")
        }
        return ResetPlan(method: known, target: row["reset_target"], resetProtocol: proto,
                         timeoutSeconds: try row.int("reset_timeout"))
    }

    static func placement(_ row: PostgresRow) throws -> BuilderPlacement {
        BuilderPlacement(virtualized: try row.bool("virtualized"), openResources: resources(row["open"]),
                         restrictedResources: resources(row["restricted"]))
    }

    /// Writes what the core changed, each kind of change for the whole batch at once: queue entries that
    /// left, then one statement for the rest (builders, builds, queue entries, history). Queue entries that
    /// let go of a builder and stay queued (a retry) are written first, on their own: a builder moving from
    /// one build to another within the batch never holds two at once (a unique index forbids it).
    static func write(_ core: LifecycleCore, on connection: PostgresConnection) throws {
        // The core's graph first; the database's trigger checks the same rows again.
        if let wrong = core.forbiddenTransitions.first {
            throw StoreError(.conflict, "build \(wrong.build) may not go from \(wrong.from.rawValue) to \(wrong.to.rawValue); "
                             + "nothing of this batch was written")
        }
        let dequeued = core.dequeued
        if !dequeued.isEmpty {
            try connection.execute("DELETE FROM buildqueue WHERE build_id = ANY ($1::bigint[])", [PostgresArray(dequeued)])
        }
        let builds = core.changedBuilds
        // Builds that enter the queue (a retry) get their entry first; the rest of the batch may update it.
        let enqueued = builds.compactMap { build in build.enqueued.map { (build.id, $0) } }
        if !enqueued.isEmpty {
            try connection.execute("""
                INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore, virtualized, constraints)
                SELECT x.id, x.processor, x.score, x.score, b.require_virtualized, b.constraints
                  FROM unnest($1::bigint[], $2::int[], $3::int[]) AS x(id, processor, score) JOIN build b ON b.id = x.id
                """, [PostgresArray(enqueued.map(\.0)), PostgresArray(enqueued.map(\.1.processor)),
                      PostgresArray(enqueued.map(\.1.score))])
        }
        let queued = builds.filter { $0.queue != nil && $0.enqueued == nil }
        let holding: (BuildRecord) -> Bool = { $0.queue?.state.holdsBuilder == true }
        let releasing = queued.filter { !holding($0) }
        if !releasing.isEmpty {
            try connection.execute("WITH \(Self.queueUpdate(parameter: 1)) SELECT 1", Self.queueParameters(releasing))
        }
        let taking = queued.filter(holding)
        let builders = core.changedBuilders
        let history = core.history
        // Only builds whose own row changed are written; a lease renewal touches the queue entry alone.
        let rows = core.changedBuildRows
        guard !builders.isEmpty || !rows.isEmpty || !taking.isEmpty || !history.isEmpty else { return }
        try connection.execute("""
            WITH builders AS (
                UPDATE builder b SET agent_session = x.session, last_seq = x.seq,
                       last_seen = CASE WHEN x.seen THEN now() ELSE b.last_seen END, agent_state = x.state,
                       clean_status = x.clean, failure_count = x.failures, builderok = x.ok, failnotes = x.notes,
                       idle_faults = x.idle_faults, agent_release = coalesce(x.release, b.agent_release),
                       agent_capabilities = CASE WHEN x.release IS NULL THEN b.agent_capabilities
                                                 ELSE string_to_array(x.capabilities, ',') END
                  FROM unnest($1::int[], $2::text[], $3::bigint[], $4::bool[], $5::text[], $6::text[], $7::int[],
                              $8::bool[], $9::text[], $35::int[], $36::text[], $37::text[])
                       AS x(id, session, seq, seen, state, clean, failures, ok, notes, idle_faults, release, capabilities)
                 WHERE b.id = x.id),
            builds AS (
                UPDATE build b SET status = x.status, builder_id = x.builder, failure_count = x.failures,
                       failnotes = x.notes, result = x.result, log_name = x.log_name, log_sha256 = x.log_sha256,
                       date_started = CASE x.started WHEN 'now' THEN now() WHEN 'clear' THEN NULL ELSE b.date_started END,
                       date_finished = CASE x.finished WHEN 'now' THEN now() WHEN 'clear' THEN NULL ELSE b.date_finished END
                  FROM unnest($10::bigint[], $11::text[], $12::int[], $13::int[], $14::text[], $15::text[], $16::text[],
                              $17::text[], $18::text[], $19::text[])
                       AS x(id, status, builder, failures, notes, result, log_name, log_sha256, started, finished)
                 WHERE b.id = x.id),
            history AS (
                INSERT INTO build_event (build_id, status, attempt, builder, message, actor)
                SELECT x.build_id, x.status, x.attempt, x.builder, x.message, x.actor
                  FROM unnest($20::bigint[], $21::text[], $22::int[], $23::text[], $24::text[], $25::text[])
                       WITH ORDINALITY AS x(build_id, status, attempt, builder, message, actor, position)
                 ORDER BY x.position),
            \(Self.queueUpdate(parameter: 26))
            SELECT 1
            """, [PostgresArray(builders.map(\.id)), PostgresArray(builders.map(\.session)),
                  PostgresArray(builders.map(\.lastSeq)), PostgresArray(builders.map(\.seen)),
                  PostgresArray(builders.map(\.agentState?.rawValue)), PostgresArray(builders.map(\.cleanStatus.rawValue)),
                  PostgresArray(builders.map(\.standing.failures)), PostgresArray(builders.map(\.standing.ok)),
                  PostgresArray(builders.map(\.standing.notes)),
                  PostgresArray(rows.map(\.id)), PostgresArray(rows.map(\.status.rawValue)),
                  PostgresArray(rows.map(\.builderID)), PostgresArray(rows.map(\.job.failures)),
                  PostgresArray(rows.map(\.job.notes)), PostgresArray(rows.map(\.result?.rawValue)),
                  PostgresArray(rows.map(\.logName)), PostgresArray(rows.map(\.logSHA256)),
                  PostgresArray(rows.map(\.started.rawValue)),
                  PostgresArray(rows.map(\.finished.rawValue)),
                  PostgresArray(history.map(\.build)), PostgresArray(history.map(\.status.rawValue)),
                  PostgresArray(history.map(\.attempt)), PostgresArray(history.map(\.builder)),
                  PostgresArray(history.map(\.message)), PostgresArray(history.map(\.actor))]
                + Self.queueParameters(taking) + [PostgresArray(builders.map(\.standing.idleFaults)),
                                                  PostgresArray(builders.map(\.announced?.release)),
                                                  PostgresArray(builders.map { $0.announced?.capabilities.joined(separator: ",") })])
        try Self.recordBuilderHistory(core.builderHistory, on: connection)
        try Self.writeResets(core, on: connection)
        let rescored = core.rescored
        if !rescored.isEmpty {
            try connection.execute("""
                UPDATE buildqueue q SET lastscore = x.score, manual = x.manual
                  FROM unnest($1::bigint[], $2::int[], $3::bool[]) AS x(id, score, manual) WHERE q.build_id = x.id
                """, [PostgresArray(rescored.map(\.buildID)), PostgresArray(rescored.map(\.score.last)),
                      PostgresArray(rescored.map(\.score.manual))])
        }
        // A dependency wait's missing relation is kept while it waits, and goes when it is queued again.
        let waits = rows.filter { $0.status == .manualDepWait || $0.enqueued != nil }
        if !waits.isEmpty {
            try connection.execute("""
                UPDATE build b SET dependencies = x.dependencies
                  FROM unnest($1::bigint[], $2::text[]) AS x(id, dependencies) WHERE b.id = x.id
                """, [PostgresArray(waits.map(\.id)),
                      PostgresArray(waits.map { $0.status == .manualDepWait ? $0.dependencies : nil })])
        }
        for latency in core.dispatchLatencies { BuilddMetrics.dispatchLatency(seconds: latency) }
        for (status, seconds) in core.buildDurations { BuilddMetrics.buildDuration(status: status.rawValue, seconds: seconds) }
    }

    /// A `queue AS (UPDATE buildqueue ...)` clause taking its nine arrays from parameter `first` on.
    static func queueUpdate(parameter first: Int) -> String {
        let p = (first..<(first + 9)).map { "$\($0)" }
        return """
            queue AS (
                UPDATE buildqueue q SET state = x.state, builder_id = x.builder, lease_expires = to_timestamp(x.lease),
                       dispatched_at = CASE WHEN x.cleared THEN NULL ELSE q.dispatched_at END,
                       token_sha256 = CASE WHEN x.cleared THEN NULL ELSE coalesce(x.upload_key, q.token_sha256) END,
                       logtail = CASE WHEN x.tail_set THEN x.tail ELSE q.logtail END,
                       abort_sent_at = CASE x.abort_sent WHEN 'now' THEN now() WHEN 'clear' THEN NULL
                                       ELSE q.abort_sent_at END
                  FROM unnest(\(p[0])::bigint[], \(p[1])::text[], \(p[2])::int[], \(p[3])::float8[], \(p[4])::bool[],
                              \(p[5])::bool[], \(p[6])::text[], \(p[7])::text[], \(p[8])::text[])
                       AS x(id, state, builder, lease, cleared, tail_set, tail, abort_sent, upload_key)
                 WHERE q.build_id = x.id)
            """
    }

    static func queueParameters(_ builds: [BuildRecord]) -> [(any PostgresBindable)?] {
        let entries = builds.compactMap { build in build.queue.map { (build.id, $0) } }
        return [PostgresArray(entries.map(\.0)), PostgresArray(entries.map(\.1.state.rawValue)),
                PostgresArray(entries.map(\.1.builderID)), PostgresArray(entries.map(\.1.leaseUntil)),
                PostgresArray(entries.map(\.1.dispatchCleared)), PostgresArray(entries.map { $0.1.logTail != nil }),
                PostgresArray(entries.map { $0.1.logTail ?? nil }), PostgresArray(entries.map(\.1.abortSent.rawValue)),
                PostgresArray(entries.map(\.1.uploadKey))]
    }
}
