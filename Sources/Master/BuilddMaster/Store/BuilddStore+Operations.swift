import BuilddShared
import Postgres

/// Operators' changes: builders' state, cancelling, retrying and rescoring builds. Each takes the actor
/// that asked (a token's name, or `cli:USER`) and records it in the build's or the builder's history.
extension BuilddStore {
    /// Re-enables a builder: ok again, failure count and failnotes cleared.
    public func enableBuilder(_ name: String, actor: String?) async throws {
        try await database.transaction { connection in
            try Self.updateStanding(name: name, id: nil, on: connection) { $0.reset() }
            try Self.recordBuilderHistory([BuilderHistoryEntry(builder: name, kind: .enabled, actor: actor, reason: nil)],
                                          on: connection)
        }
    }

    /// Takes a builder out of dispatch with a reason shown in `builder list`.
    public func disableBuilder(_ name: String, reason: String, actor: String?) async throws {
        try await database.transaction { connection in
            try Self.updateStanding(name: name, id: nil, on: connection) { $0.disable(reason) }
            try Self.recordBuilderHistory([BuilderHistoryEntry(builder: name, kind: .disabled, actor: actor,
                                                               reason: reason)], on: connection)
        }
    }

    /// The farm marks a builder not ok (a legacy builder's fault, a wrong architecture): recorded in its
    /// history as `failed` with the reason and no actor.
    public func markBuilderFailed(_ name: String, reason: String) async throws {
        try await updateStanding(name: name) { $0.disable(reason) }
    }

    /// In manual mode a builder gets no work from the dispatcher.
    public func setBuilderManual(_ name: String, _ manual: Bool, actor: String?) async throws {
        try await database.transaction { connection in
            let changed = try connection.query("UPDATE builder SET manual = $2 WHERE name = $1", [name, manual])
            if changed.affectedRows == 0 { throw StoreError(.notFound, "no builder named '\(name)'") }
            try Self.recordBuilderHistory([BuilderHistoryEntry(builder: name, kind: manual ? .manual : .automatic,
                                                               actor: actor, reason: nil)], on: connection)
        }
    }

    /// Changes a builder's standing in the failure ledger (``BuilderStanding``) under its row lock; a
    /// failure it counts, or the builder marked not ok, goes into the builder's history.
    @discardableResult
    func updateStanding<T: Sendable>(name: String? = nil, id: Int? = nil,
                                     _ change: @escaping @Sendable (inout BuilderStanding) -> T) async throws -> T {
        try await database.transaction { connection in
            var before: (String, BuilderStanding)?
            var after: BuilderStanding?
            let result = try Self.updateStanding(name: name, id: id, on: connection) { standing, builder in
                before = (builder, standing)
                let result = change(&standing)
                after = standing
                return result
            }
            if let (builder, old) = before, let after {
                try Self.recordBuilderHistory(BuilderHistoryEntry.farmChange(of: builder, from: old, to: after),
                                              on: connection)
            }
            return result
        }
    }

    static func updateStanding<T>(name: String?, id: Int?, on connection: PostgresConnection,
                                  _ change: (inout BuilderStanding) -> T) throws -> T {
        try updateStanding(name: name, id: id, on: connection) { standing, _ in change(&standing) }
    }

    static func updateStanding<T>(name: String?, id: Int?, on connection: PostgresConnection,
                                  _ change: (inout BuilderStanding, String) -> T) throws -> T {
        guard let row = try connection.query("""
            SELECT id, name, failure_count, builderok, failnotes, idle_faults FROM builder WHERE name = $1 OR id = $2
               FOR UPDATE
            """, [name, id]).first
        else { throw StoreError(.notFound, "no builder named '\(name ?? id.map(String.init) ?? "")'") }
        var standing = BuilderStanding(failures: try row.int("failure_count"), ok: try row.bool("builderok"),
                                       notes: row["failnotes"])
        standing.idleFaults = try row.int("idle_faults")
        let result = change(&standing, try row.string("name"))
        try connection.execute("""
            UPDATE builder SET failure_count = $2, builderok = $3, failnotes = $4, idle_faults = $5 WHERE id = $1
            """, [try row.int("id"), standing.failures, standing.ok, standing.notes, standing.idleFaults])
        return result
    }

    /// Adds lines to builders' histories.
    static func recordBuilderHistory(_ lines: [BuilderHistoryEntry], on connection: PostgresConnection) throws {
        guard !lines.isEmpty else { return }
        try connection.execute("""
            INSERT INTO builder_event (builder, kind, actor, reason)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
            """, [PostgresArray(lines.map(\.builder)), PostgresArray(lines.map(\.kind.rawValue)),
                  PostgresArray(lines.map(\.actor)), PostgresArray(lines.map(\.reason))])
    }

    /// A builder's history, newest first.
    /// A page of a builder's history, newest first, below line `before` (nil: from the newest); `next` is the
    /// line the following page goes below (nil: this was the last).
    public func builderHistoryPage(_ name: String, limit: Int, before: Int64?) async throws
        -> (lines: [BuilderEvent], next: Int64?) {
        let rows = try await database.query("""
            SELECT id, \(iso("at")) AS at, kind, actor, reason FROM builder_event
             WHERE builder = $1 AND ($3::bigint IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $2
            """, [name, limit + 1, before]).rows
        if rows.isEmpty, try await database.query("SELECT 1 FROM builder WHERE name = $1", [name]).first == nil {
            throw StoreError(.notFound, "no builder named '\(name)'")
        }
        let lines = try rows.prefix(limit).map {
            BuilderEvent(at: try $0.string("at"), kind: try $0.string("kind"), actor: $0["actor"], reason: $0["reason"])
        }
        let next = rows.count > limit ? try rows[limit - 1].int64("id") : nil
        return (lines, next)
    }

    public func builderHistory(_ name: String, limit: Int = 100) async throws -> [BuilderEvent] {
        let rows = try await database.query("""
            SELECT \(iso("at")) AS at, kind, actor, reason FROM builder_event WHERE builder = $1
             ORDER BY id DESC LIMIT $2
            """, [name, limit]).rows
        if rows.isEmpty, try await database.query("SELECT 1 FROM builder WHERE name = $1", [name]).first == nil {
            throw StoreError(.notFound, "no builder named '\(name)'")
        }
        return try rows.map {
            BuilderEvent(at: try $0.string("at"), kind: try $0.string("kind"), actor: $0["actor"], reason: $0["reason"])
        }
    }

    /// Cancels a build. A waiting one is CANCELLED at once; a running one becomes CANCELLING, its builder
    /// is told to abort, and it ends CANCELLED when the builder confirms (or, after `deadlineSeconds`
    /// without a confirmation, CANCELLED with a failure counted against the builder).
    /// - Returns: the status the build is in now.
    @discardableResult
    public func cancel(_ buildID: Int64, deadlineSeconds: Int = 180, actor: String? = nil) async throws -> BuildStatus {
        try await database.transaction { connection in
            // Who holds it, read first so that its builder is locked before the build, as everywhere.
            let holder = try connection.query("""
                SELECT coalesce(q.builder_id, b.builder_id) AS holder FROM build b
                  LEFT JOIN buildqueue q ON q.build_id = b.id WHERE b.id = $1
                """, [buildID]).first.map { $0["holder"].flatMap(Int.init) }
            guard let holder else { throw StoreError(.notFound, "no build \(buildID)") }
            var core = try Self.loadCore(builderNames: [], builderIDs: holder.map { [$0] } ?? [], buildIDs: [buildID],
                                         filesOf: [], leaseSeconds: 0, on: connection)
            let outcome = core.cancel(buildID, deadlineSeconds: Double(deadlineSeconds), by: actor)
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
    /// The query only picks candidates (``abortDueCondition``, checked against the core by a test); the core
    /// decides and marks each as told (``LifecycleCore/abortsDue()``).
    public func abortsDue() async throws -> [(buildID: Int64, attempt: Int32, builder: String)] {
        try await decide(over: """
            SELECT q.build_id, q.builder_id FROM buildqueue q WHERE \(Self.abortDueCondition)
             ORDER BY q.build_id LIMIT 500
            """) { $0.abortsDue() }
    }

    /// Cancelling entries whose builder was not told to abort yet, or not for
    /// ``BuildLifecycle/abortResendSeconds``, on `buildqueue q`: ``BuildLifecycle/abortDue(now:lastSent:)`` as SQL.
    static let abortDueCondition = """
        q.state = 'CANCELLING' AND (q.abort_sent_at IS NULL
            OR q.abort_sent_at < now() - interval '\(BuildLifecycle.abortResendSeconds) seconds')
        """

    /// Queues a failed or cancelled build again with a fresh score and failure count.
    public func retry(_ buildID: Int64, actor: String? = nil) async throws {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [], builderIDs: [], buildIDs: [buildID], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            switch core.retry(buildID, by: actor) {
            case .queued:
                try Self.write(core, on: connection)
            case .notFound:
                throw StoreError(.notFound, "no build \(buildID)")
            case .unscored:
                throw StoreError(.invalid, "build \(buildID) has no score to queue it with")
            case .notRetryable(let status):
                throw StoreError(.conflict, "build \(buildID) is \(status.rawValue): only FAILEDTOBUILD, "
                                 + "MANUALDEPWAIT, CHROOTWAIT, FAILEDTOUPLOAD and CANCELLED builds can be retried")
            }
        }
    }

    /// Sets an operator's score, which replaces the computed one until cleared (`score == nil`).
    /// - Returns: the score now in effect.
    @discardableResult
    public func rescore(_ buildID: Int64, score: Int?, actor: String? = nil) async throws -> Int {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [], builderIDs: [], buildIDs: [buildID], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            switch core.rescore(buildID, to: score, by: actor) {
            case .scored(let now):
                try Self.write(core, on: connection)
                return now
            case .notFound:
                throw StoreError(.notFound, "no build \(buildID)")
            case .notQueued(let status):
                throw StoreError(.conflict, "build \(buildID) is \(status.rawValue), not in the queue: only waiting or "
                                 + "running builds have a score")
            }
        }
    }

    /// Brings the age bonus of waiting builds up to date. Only rows old enough for a bonus are read and
    /// only rows whose bonus changed are written, so the queue is not rewritten on every pass.
    /// - Returns: how many scores changed.
    @discardableResult
    public func refreshAgeScores() async throws -> Int {
        try await database.query(Self.ageRefresh, [Self.youngestAgeBonus]).affectedRows
    }

    /// The age refresh's statement (its parameter: ``youngestAgeBonus``), the age bonus generated from the core's
    /// table (``Scoring/ageScoreSQL(queuedColumn:)``; `CoreRulesInSQLTests` runs it against the core).
    static let ageRefresh = """
        UPDATE buildqueue SET lastscore = basescore + \(Scoring.ageScoreSQL(queuedColumn: "date_queued"))
         WHERE state = 'WAITING' AND NOT manual AND date_queued < now() - make_interval(secs => $1)
           AND lastscore <> basescore + \(Scoring.ageScoreSQL(queuedColumn: "date_queued"))
        """

    /// Seconds a build waits before its first age bonus: younger ones are not read by the refresh.
    static let youngestAgeBonus = Scoring.ageBonuses.map(\.seconds).min() ?? 0
}
