import BuilddShared
import Postgres

/// What applying an agent event came to.
public enum EventOutcome: Equatable, Sendable {
    /// The event changed state.
    case applied(String)
    /// Stale or repeated: nothing changed (an old attempt, a replayed sequence number).
    case ignored(String)
    /// The agent works on something that is not current: tell it to abort (build, attempt).
    case abort(buildID: Int64, attempt: Int32, reason: String)
    /// The event may not be applied (unknown builder, wrong user): dead-letter it.
    case rejected(String)
}

extension BuilddStore {
    /// Applies one agent event in one transaction. Events of one builder must arrive in order
    /// (the status queues shard by builder); `(session, seq)` makes a replay harmless and
    /// `(build, attempt)` fences off everything an old attempt says.
    ///
    /// - Parameters:
    ///   - userID: the AMQP `user_id` the broker validated; must own the builder when it has a broker user.
    ///   - leaseSeconds: how long a heartbeat keeps a build's lease.
    public func apply(_ event: AgentEvent, userID: String?, leaseSeconds: Int) async throws -> EventOutcome {
        try await database.transaction { connection in
            try Self.apply(event, userID: userID, leaseSeconds: leaseSeconds, on: connection)
        }
    }

    static func apply(_ event: AgentEvent, userID: String?, leaseSeconds: Int,
                      on connection: PostgresConnection) throws -> EventOutcome {
        guard let builder = try connection.query("""
            SELECT id, broker_user, agent_session, last_seq, builderok, active, kind FROM builder WHERE name = $1 FOR UPDATE
            """, [event.builder]).first
        else { return .rejected("unknown builder \(event.builder)") }
        if let owner = builder["broker_user"], owner != userID {
            return .rejected("user \(userID ?? "(none)") may not speak for builder \(event.builder)")
        }
        guard try builder.string("kind") == "agent" else {
            return .rejected("builder \(event.builder) is not an agent")
        }
        let builderID = try builder.int("id")
        if builder["agent_session"] == event.session, event.seq <= (try builder.int64("last_seq")) {
            return .ignored("replayed event \(event.seq) of session \(event.session)")
        }
        let newState: AgentState? = switch event.kind {
        case .accepted: nil  // set below only when the accept holds
        case .finished: .idle
        case .hello, .heartbeat: event.state
        }
        try connection.execute("""
            UPDATE builder SET agent_session = $2, last_seq = $3, last_seen = now(), agent_state = coalesce($4, agent_state)
             WHERE id = $1
            """, [builderID, event.session, event.seq, newState?.rawValue])

        switch event.kind {
        case .hello, .heartbeat:
            return try applyHeartbeat(event, builderID: builderID, leaseSeconds: leaseSeconds, on: connection)
        case .accepted:
            return try applyAccepted(event, builderID: builderID, usable: try builder.bool("builderok")
                                     && builder.bool("active"), leaseSeconds: leaseSeconds, on: connection)
        case .finished:
            return try applyFinished(event, builderID: builderID, on: connection)
        }
    }

    /// The queue row and attempt of a build, locked.
    private static func lockQueued(_ buildID: Int64, on connection: PostgresConnection) throws -> PostgresRow? {
        try connection.query("""
            SELECT q.state, q.builder_id, b.attempt, b.status FROM buildqueue q JOIN build b ON b.id = q.build_id
             WHERE q.build_id = $1 FOR UPDATE OF q, b
            """, [buildID]).first
    }

    private static func applyHeartbeat(_ event: AgentEvent, builderID: Int, leaseSeconds: Int,
                                       on connection: PostgresConnection) throws -> EventOutcome {
        if let buildID = event.buildID, let attempt = event.attempt, event.state != .idle {
            guard let row = try lockQueued(buildID, on: connection),
                  ["RUNNING", "CANCELLING"].contains(try row.string("state")),
                  try row.int("attempt") == Int(attempt), row["builder_id"].flatMap(Int.init) == builderID
            else {
                // A heartbeat sent just before this attempt's `finished` was applied is late, not stale.
                let ended = try connection.query("""
                    SELECT 1 FROM build WHERE id = $1 AND attempt = $2 AND builder_id = $3
                       AND NOT EXISTS (SELECT 1 FROM buildqueue WHERE build_id = $1)
                    """, [buildID, Int(attempt), builderID]).first != nil
                if ended { return .ignored("late \(event.kind.rawValue) for finished build \(buildID)") }
                return .abort(buildID: buildID, attempt: attempt, reason: "build \(buildID) attempt \(attempt) is not current")
            }
            // A cancelling build keeps its abort deadline: heartbeats do not extend it.
            try connection.execute("""
                UPDATE buildqueue SET logtail = coalesce($3, logtail),
                       lease_expires = CASE WHEN state = 'RUNNING' THEN now() + make_interval(secs => $2)
                                            ELSE lease_expires END
                 WHERE build_id = $1
                """, [buildID, leaseSeconds, event.logTail])
            return .applied("lease renewed")
        }
        // The agent is idle: a build the database still gives it was lost (the agent restarted or forgot it).
        let lost = try connection.query("""
            SELECT q.build_id, b.attempt, bl.name FROM buildqueue q JOIN build b ON b.id = q.build_id
              JOIN builder bl ON bl.id = q.builder_id
             WHERE q.builder_id = $1 AND q.state IN ('RUNNING', 'CANCELLING') FOR UPDATE OF q, b
            """, [builderID]).rows
        for row in lost {
            let buildID = try row.int64("build_id")
            let state = try lockQueued(buildID, on: connection)?.string("state")
            if state == "CANCELLING" {
                try finishBuild(connection, buildID: buildID, attempt: try row.int("attempt"), builder: event.builder,
                                status: .cancelled, result: nil, message: "builder went idle while cancelling")
            } else {
                try countFailure(connection, buildID: buildID, attempt: try row.int("attempt"), builderID: builderID,
                                 builder: event.builder, reason: "\(event.builder) reported idle while building")
            }
        }
        return lost.isEmpty ? .applied("\(event.kind.rawValue) \(event.state?.rawValue ?? "")")
            : .applied("requeued \(lost.count) lost build(s)")
    }

    private static func applyAccepted(_ event: AgentEvent, builderID: Int, usable: Bool, leaseSeconds: Int,
                                      on connection: PostgresConnection) throws -> EventOutcome {
        let buildID = event.buildID!
        let attempt = event.attempt!
        guard let row = try lockQueued(buildID, on: connection) else {
            return .abort(buildID: buildID, attempt: attempt, reason: "build \(buildID) no longer needs a builder")
        }
        let state = try row.string("state")
        let current = try row.int("attempt") == Int(attempt)
        if current, state == "RUNNING", row["builder_id"].flatMap(Int.init) == builderID {
            return .ignored("accepted repeated")
        }
        guard current, state == "DISPATCHED" else {
            return .abort(buildID: buildID, attempt: attempt,
                          reason: "attempt \(attempt) of build \(buildID) is not current (queue state \(state))")
        }
        guard usable else {
            return .abort(buildID: buildID, attempt: attempt, reason: "builder \(event.builder) is disabled")
        }
        let busy = try connection.query("""
            SELECT build_id FROM buildqueue WHERE builder_id = $1 AND state IN ('RUNNING', 'CANCELLING')
            """, [builderID]).first
        if let busy {
            return .abort(buildID: buildID, attempt: attempt,
                          reason: "builder \(event.builder) already runs build \(try busy.int64("build_id"))")
        }
        try connection.execute("""
            UPDATE buildqueue SET state = 'RUNNING', builder_id = $2, lease_expires = now() + make_interval(secs => $3)
             WHERE build_id = $1
            """, [buildID, builderID, leaseSeconds])
        try connection.execute("""
            UPDATE build SET status = 'BUILDING', builder_id = $2, date_started = now() WHERE id = $1
            """, [buildID, builderID])
        try connection.execute("UPDATE builder SET agent_state = 'BUILDING', clean_status = 'DIRTY' WHERE id = $1",
                               [builderID])
        try recordEvent(connection, build: buildID, status: .building, attempt: Int(attempt), builder: event.builder,
                        message: nil)
        return .applied("build \(buildID) attempt \(attempt) started on \(event.builder)")
    }

    private static func applyFinished(_ event: AgentEvent, builderID: Int,
                                      on connection: PostgresConnection) throws -> EventOutcome {
        let buildID = event.buildID!
        let attempt = event.attempt!
        let result = event.result!
        try connection.execute("UPDATE builder SET clean_status = 'CLEAN' WHERE id = $1", [builderID])
        guard let row = try lockQueued(buildID, on: connection) else {
            return .ignored("build \(buildID) already finished")
        }
        let state = try row.string("state")
        guard try row.int("attempt") == Int(attempt), ["RUNNING", "CANCELLING"].contains(state),
              row["builder_id"].flatMap(Int.init) == builderID
        else { return .ignored("finished for attempt \(attempt) of build \(buildID), which is not current") }

        // Every file the agent names must be in the artifact store for this attempt, with the same digest.
        var missing: [String] = []
        let declared = (event.files ?? []) + (event.log.map { [$0] } ?? [])
        for file in declared {
            let stored = try connection.query("""
                SELECT sha256, size FROM build_file WHERE build_id = $1 AND attempt = $2 AND name = $3
                """, [buildID, Int(attempt), file.name]).first
            if try stored?.string("sha256") != file.sha256 || stored?.int64("size") != file.size {
                missing.append(file.name)
            }
        }
        if let log = event.log, !missing.contains(log.name) {
            try connection.execute("UPDATE build SET log_name = $2, log_sha256 = $3 WHERE id = $1",
                                   [buildID, log.name, log.sha256])
        }
        try connection.execute("UPDATE build SET result = $2 WHERE id = $1", [buildID, result.rawValue])
        if !missing.isEmpty {
            try countFailure(connection, buildID: buildID, attempt: Int(attempt), builderID: builderID,
                             builder: event.builder,
                             reason: "result files missing or different from the upload: \(missing.joined(separator: ", "))")
            return .applied("build \(buildID): files missing, requeued")
        }
        switch result.disposition(wasCancelling: state == "CANCELLING") {
        case .finish(let status):
            if status == .fullyBuilt {
                try recordEvent(connection, build: buildID, status: .gathering, attempt: Int(attempt),
                                builder: event.builder, message: "\(event.files?.count ?? 0) file(s) verified")
            }
            try finishBuild(connection, buildID: buildID, attempt: Int(attempt), builder: event.builder, status: status,
                            result: result, message: status == .fullyBuilt ? nil : (event.message ?? result.rawValue))
            try connection.execute("UPDATE builder SET failure_count = 0 WHERE id = $1", [builderID])
            return .applied("build \(buildID) \(status.rawValue)")
        case .countFailure:
            try countFailure(connection, buildID: buildID, attempt: Int(attempt), builderID: builderID,
                             builder: event.builder, reason: "\(result.rawValue): \(event.message ?? "no reason given")")
            return .applied("build \(buildID) \(result.rawValue), counted")
        }
    }
}
