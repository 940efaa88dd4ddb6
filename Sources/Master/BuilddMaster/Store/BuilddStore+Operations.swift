import BuilddShared
import Postgres

/// Operators' changes: builders' state, cancelling, retrying and rescoring builds.
extension BuilddStore {
    /// Re-enables a builder: ok again, failure count and failnotes cleared.
    public func enableBuilder(_ name: String) async throws {
        try await updateBuilder(name, "builderok = true, failnotes = NULL, failure_count = 0", [])
    }

    /// Takes a builder out of dispatch with a reason shown in `builder list`.
    public func disableBuilder(_ name: String, reason: String) async throws {
        try await updateBuilder(name, "builderok = false, failnotes = $2", [reason])
    }

    /// In manual mode a builder gets no work from the dispatcher.
    public func setBuilderManual(_ name: String, _ manual: Bool) async throws {
        try await updateBuilder(name, "manual = $2", [manual])
    }

    private func updateBuilder(_ name: String, _ assignments: String, _ values: [(any PostgresBindable)?]) async throws {
        let changed = try await database.query("UPDATE builder SET \(assignments) WHERE name = $1", [name] + values)
        if changed.affectedRows == 0 { throw StoreError(.notFound, "no builder named '\(name)'") }
    }

    /// Cancels a build. A waiting one is CANCELLED at once; a running one becomes CANCELLING, its builder
    /// is told to abort, and it ends CANCELLED when the builder confirms (or, after `deadlineSeconds`
    /// without a confirmation, CANCELLED with a failure counted against the builder).
    /// - Returns: the status the build is in now.
    @discardableResult
    public func cancel(_ buildID: Int64, deadlineSeconds: Int = 180) async throws -> BuildStatus {
        try await database.transaction { connection in
            guard var loaded = try Self.loadLifecycle(buildID, on: connection) else {
                throw StoreError(.notFound, "no build \(buildID)")
            }
            switch loaded.machine.cancel(now: loaded.now, deadline: Double(deadlineSeconds)) {
            case .finish:
                try Self.finishBuild(connection, buildID: buildID, attempt: loaded.attempt, builder: nil,
                                     status: .cancelled, result: nil, message: "cancelled before it started")
                return .cancelled
            case .requestAbort:
                try Self.persistLease(loaded.machine, buildID: buildID, on: connection)
                try connection.execute("UPDATE build SET status = 'CANCELLING' WHERE id = $1", [buildID])
                try Self.recordEvent(connection, build: buildID, status: .cancelling, attempt: loaded.attempt,
                                     builder: loaded.builderName, message: "cancel requested")
                return .cancelling
            default:
                if case .cancelling = loaded.machine.state { return .cancelling }
                let status = try connection.query("SELECT status FROM build WHERE id = $1", [buildID]).first?
                    .string("status") ?? "?"
                throw StoreError(.conflict, "build \(buildID) is \(status): only waiting or running builds can be cancelled")
            }
        }
    }

    /// Cancelling builds whose builder should be told (again) to abort: not told yet, or not for 30 s.
    public func abortsDue() async throws -> [(buildID: Int64, attempt: Int32, builder: String)] {
        try await database.query("""
            UPDATE buildqueue q SET abort_sent_at = now() FROM build b, builder bl
             WHERE b.id = q.build_id AND bl.id = q.builder_id AND q.state = 'CANCELLING'
               AND (q.abort_sent_at IS NULL OR q.abort_sent_at < now() - interval '30 seconds')
            RETURNING q.build_id, b.attempt, bl.name
            """).rows.map { (try $0.int64("build_id"), Int32(try $0.int("attempt")), try $0.string("name")) }
    }

    /// Queues a failed or cancelled build again with a fresh score and failure count.
    public func retry(_ buildID: Int64) async throws {
        try await database.transaction { connection in
            guard let row = try connection.query("""
                SELECT status, attempt, processor_id, urgency, pocket, component, archive_purpose FROM build
                 WHERE id = $1 FOR UPDATE
                """, [buildID]).first
            else { throw StoreError(.notFound, "no build \(buildID)") }
            let status = BuildStatus(rawValue: try row.string("status"))
            guard let status, status.isRetryable else {
                throw StoreError(.conflict, "build \(buildID) is \(try row.string("status")): only FAILEDTOBUILD, "
                                 + "MANUALDEPWAIT, CHROOTWAIT, FAILEDTOUPLOAD and CANCELLED builds can be retried")
            }
            let score = Scoring.score(
                urgency: Urgency(rawValue: try row.string("urgency")) ?? .medium,
                pocket: Pocket(rawValue: try row.string("pocket")) ?? .release,
                component: Component(rawValue: try row.string("component")) ?? .main,
                archive: ArchivePurpose(rawValue: try row.string("archive_purpose")) ?? .primary)
            try connection.execute("""
                UPDATE build SET status = 'NEEDSBUILD', failure_count = 0, result = NULL, failnotes = NULL,
                       builder_id = NULL, date_started = NULL, date_finished = NULL
                 WHERE id = $1
                """, [buildID])
            try connection.execute("""
                INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore) VALUES ($1, $2, $3, $3)
                """, [buildID, try row.int("processor_id"), score])
            try Self.recordEvent(connection, build: buildID, status: .needsBuild, attempt: try row.int("attempt"),
                                 builder: nil, message: "retried from \(status.rawValue)")
        }
    }

    /// Sets an operator's score, which replaces the computed one until cleared (`score == nil`).
    /// - Returns: the score now in effect.
    @discardableResult
    public func rescore(_ buildID: Int64, score: Int?) async throws -> Int {
        let result = try await database.query("""
            UPDATE buildqueue SET manual = ($2::integer IS NOT NULL),
                   lastscore = coalesce($2::integer, basescore + \(Scoring.ageScoreSQL(queuedColumn: "date_queued")))
             WHERE build_id = $1 RETURNING lastscore
            """, [buildID, score])
        guard let row = result.first else {
            throw StoreError(.conflict, "build \(buildID) is not in the queue: only waiting or running builds have a score")
        }
        return try row.int("lastscore")
    }

    /// Brings the age bonus of waiting builds up to date. Only rows old enough for a bonus are read and
    /// only rows whose bonus changed are written, so the queue is not rewritten on every pass.
    /// - Returns: how many scores changed.
    @discardableResult
    public func refreshAgeScores() async throws -> Int {
        let bonus = Scoring.ageScoreSQL(queuedColumn: "date_queued")
        let youngest = Scoring.ageBonuses.map(\.seconds).min() ?? 0
        return try await database.query("""
            UPDATE buildqueue SET lastscore = basescore + \(bonus)
             WHERE state = 'WAITING' AND NOT manual AND date_queued < now() - make_interval(secs => $1)
               AND lastscore <> basescore + \(bonus)
            """, [youngest]).affectedRows
    }
}
