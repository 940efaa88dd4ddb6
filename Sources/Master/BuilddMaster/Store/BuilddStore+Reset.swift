import BuilddShared
import Postgres

/// Builder resets (``BuilderReset``): the store reads the rows, the core decides, the store writes what it
/// decided. The master's ``ResetRunner`` runs the resets a pass starts.
extension BuilddStore {
    /// The pass over builders that are not CLEAN and have a reset: starts those that are due (CLEANING until
    /// their deadline) and counts a failure against each whose reset ran past its deadline. Several masters
    /// may pass at once: each takes the rows the others have not locked, so a reset is started once.
    public func resetPass() async throws -> [LifecycleCore.ResetOrder] {
        try await database.transaction { connection in
            let ids = try connection.query("""
                SELECT id FROM builder WHERE clean_status <> '\(CleanStatus.clean.rawValue)'
                   AND reset_method <> '\(ResetMethod.none.rawValue)'
                 ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED
                """).rows.map { try $0.int("id") }
            guard !ids.isEmpty else { return [] }
            var core = try Self.loadCore(builderNames: [], builderIDs: ids, buildIDs: [], filesOf: [], leaseSeconds: 0,
                                         on: connection)
            let orders = core.resetPass()
            try Self.write(core, on: connection)
            return orders
        }
    }

    /// What running reset `attempt` of `builder` came to.
    @discardableResult
    public func resetRan(builder: String, attempt: Int, result: BuilderReset.RunResult) async throws -> EventOutcome {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [builder], builderIDs: [], buildIDs: [], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let outcome = core.resetRan(builder: builder, attempt: attempt, result: result)
            try Self.write(core, on: connection)
            return outcome
        }
    }

    /// Whoever reset `builder` says it is done (the asynchronous protocol, or an operator): CLEAN.
    @discardableResult
    public func resetCompleted(builder: String, actor: String?) async throws -> EventOutcome {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [builder], builderIDs: [], buildIDs: [], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let outcome = core.resetCompleted(builder: builder, by: actor)
            if case .rejected = outcome { throw StoreError(.notFound, "no builder named '\(builder)'") }
            try Self.write(core, on: connection)
            return outcome
        }
    }

    /// An operator asks for `builder` to be reset now (``LifecycleCore/requestReset(builder:by:)``). Returns what
    /// the core said: applied (DIRTY, the next pass starts the reset) or ignored (nothing had to change); a
    /// builder that cannot be reset is `.invalid` with the core's reason.
    @discardableResult
    public func requestReset(builder: String, actor: String?) async throws -> EventOutcome {
        try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [builder], builderIDs: [], buildIDs: [], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let outcome = core.requestReset(builder: builder, by: actor)
            if case .rejected(let why) = outcome {
                guard core.knows(builder: builder) else { throw StoreError(.notFound, "no builder named '\(builder)'") }
                throw StoreError(.invalid, why)
            }
            try Self.write(core, on: connection)
            return outcome
        }
    }

    /// Sets how a builder is reset (`builder set NAME --reset-command ...`); recorded in its history.
    public func setBuilderReset(_ name: String, _ plan: ResetPlan, actor: String?) async throws {
        try await database.transaction { connection in
            guard let row = try connection.query("SELECT virtualized FROM builder WHERE name = $1 FOR UPDATE", [name]).first else {
                throw StoreError(.notFound, "no builder named '\(name)'")
            }
            if let problem = plan.problem(virtualized: try row.bool("virtualized")) { throw StoreError(.invalid, problem) }
            try connection.execute("""
                UPDATE builder SET reset_method = $2, reset_target = $3, reset_protocol = $4, reset_timeout = $5
                 WHERE name = $1
                """, [name, plan.method.rawValue, plan.target, plan.resetProtocol.rawValue, plan.timeoutSeconds])
            try Self.recordBuilderHistory([BuilderHistoryEntry(builder: name, kind: .reset, actor: actor,
                                                               reason: "reset set to \(plan.description)")], on: connection)
        }
    }

    /// Writes the reset deadlines and attempts the core changed (``Self/write(_:on:)`` calls it).
    static func writeResets(_ core: LifecycleCore, on connection: PostgresConnection) throws {
        let builders = core.changedResets
        guard !builders.isEmpty else { return }
        try connection.execute("""
            UPDATE builder b SET reset_deadline = to_timestamp(x.deadline), reset_attempt = x.attempt
              FROM unnest($1::int[], $2::float8[], $3::int[]) AS x(id, deadline, attempt) WHERE b.id = x.id
            """, [PostgresArray(builders.map(\.id)), PostgresArray(builders.map(\.resetDeadline)),
                  PostgresArray(builders.map(\.resetAttempt))])
    }
}
