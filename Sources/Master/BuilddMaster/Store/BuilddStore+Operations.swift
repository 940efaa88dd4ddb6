import BuilddShared
import Postgres

/// Operators' changes: builders' state, cancelling, retrying and rescoring builds.
extension BuilddStore {
    /// Re-enables a builder: ok again, failure count and failnotes cleared.
    public func enableBuilder(_ name: String) async throws {
        try await updateStanding(name: name) { $0.reset() }
    }

    /// Takes a builder out of dispatch with a reason shown in `builder list`.
    public func disableBuilder(_ name: String, reason: String) async throws {
        try await updateStanding(name: name) { $0.disable(reason) }
    }

    /// In manual mode a builder gets no work from the dispatcher.
    public func setBuilderManual(_ name: String, _ manual: Bool) async throws {
        try await updateBuilder(name, "manual = $2", [manual])
    }

    /// Changes a builder's standing in the failure ledger (``BuilderStanding``) under its row lock.
    @discardableResult
    func updateStanding<T: Sendable>(name: String? = nil, id: Int? = nil,
                                     _ change: @escaping @Sendable (inout BuilderStanding) -> T) async throws -> T {
        try await database.transaction { connection in
            try Self.updateStanding(name: name, id: id, on: connection, change)
        }
    }

    static func updateStanding<T>(name: String?, id: Int?, on connection: PostgresConnection,
                                  _ change: (inout BuilderStanding) -> T) throws -> T {
        guard let row = try connection.query("""
            SELECT id, failure_count, builderok, failnotes FROM builder WHERE name = $1 OR id = $2 FOR UPDATE
            """, [name, id]).first
        else { throw StoreError(.notFound, "no builder named '\(name ?? id.map(String.init) ?? "")'") }
        var standing = BuilderStanding(failures: try row.int("failure_count"), ok: try row.bool("builderok"),
                                       notes: row["failnotes"])
        let result = change(&standing)
        try connection.execute("UPDATE builder SET failure_count = $2, builderok = $3, failnotes = $4 WHERE id = $1",
                               [try row.int("id"), standing.failures, standing.ok, standing.notes])
        return result
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
            // Who holds it, read first so that its builder is locked before the build, as everywhere.
            let holder = try connection.query("""
                SELECT coalesce(q.builder_id, b.builder_id) AS holder FROM build b
                  LEFT JOIN buildqueue q ON q.build_id = b.id WHERE b.id = $1
                """, [buildID]).first.map { $0["holder"].flatMap(Int.init) }
            guard let holder else { throw StoreError(.notFound, "no build \(buildID)") }
            var core = try Self.loadCore(builderNames: [], builderIDs: holder.map { [$0] } ?? [], buildIDs: [buildID],
                                         filesOf: [], leaseSeconds: 0, on: connection)
            let outcome = core.cancel(buildID, deadlineSeconds: Double(deadlineSeconds))
            try Self.write(core, on: connection)
            switch outcome {
            case .cancelled: return .cancelled
            case .cancelling: return .cancelling
            case .notFound: throw StoreError(.notFound, "no build \(buildID)")
            case .notCancellable(let status):
                throw StoreError(.conflict, "build \(buildID) is \(status.rawValue): only waiting or running builds can be cancelled")
            }
        }
    }

    /// Cancelling builds whose builder should be told (again) to abort: not told yet, or not for
    /// ``BuildLifecycle/abortResendSeconds``.
    public func abortsDue() async throws -> [(buildID: Int64, attempt: Int32, builder: String)] {
        try await database.query("""
            UPDATE buildqueue q SET abort_sent_at = now() FROM build b, builder bl
             WHERE b.id = q.build_id AND bl.id = q.builder_id AND q.state = 'CANCELLING'
               AND (q.abort_sent_at IS NULL OR q.abort_sent_at < now() - interval '\(BuildLifecycle.abortResendSeconds) seconds')
            RETURNING q.build_id, b.attempt, bl.name
            """).rows.map { (try $0.int64("build_id"), Int32(try $0.int("attempt")), try $0.string("name")) }
    }

    /// Queues a failed or cancelled build again with a fresh score and failure count.
    public func retry(_ buildID: Int64) async throws {
        try await database.transaction { connection in
            guard let row = try connection.query("""
                SELECT processor_id, urgency, pocket, component, archive_purpose FROM build WHERE id = $1
                """, [buildID]).first
            else { throw StoreError(.notFound, "no build \(buildID)") }
            let score = Scoring.score(
                urgency: Urgency(rawValue: try row.string("urgency")) ?? .medium,
                pocket: Pocket(rawValue: try row.string("pocket")) ?? .release,
                component: Component(rawValue: try row.string("component")) ?? .main,
                archive: ArchivePurpose(rawValue: try row.string("archive_purpose")) ?? .primary)
            var core = try Self.loadCore(builderNames: [], builderIDs: [], buildIDs: [buildID], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            switch core.retry(buildID, processor: try row.int("processor_id"), score: score) {
            case .queued:
                try Self.write(core, on: connection)
            case .notFound:
                throw StoreError(.notFound, "no build \(buildID)")
            case .notRetryable(let status):
                throw StoreError(.conflict, "build \(buildID) is \(status.rawValue): only FAILEDTOBUILD, "
                                 + "MANUALDEPWAIT, CHROOTWAIT, FAILEDTOUPLOAD and CANCELLED builds can be retried")
            }
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
