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
    ///   - legacy: the event comes from this master's legacy adapter, speaking for an XML-RPC builder.
    ///   - recordingFiles: record the event's files and log as this attempt's (in the same transaction) before
    ///     applying it: the legacy adapter stores what it fetched itself.
    public func apply(_ event: AgentEvent, userID: String?, leaseSeconds: Int, legacy: Bool = false,
                      recordingFiles: Bool = false) async throws -> EventOutcome {
        try await database.transaction { connection in
            if recordingFiles, let buildID = event.buildID, let attempt = event.attempt {
                let files = (event.files ?? []).map { ($0, "result") } + (event.log.map { [($0, "log")] } ?? [])
                for (file, kind) in files {
                    try Self.recordFile(connection, buildID: buildID, attempt: attempt, name: file.name, kind: kind,
                                        sha256: file.sha256, size: file.size)
                }
            }
            return try Self.apply(event, userID: userID, leaseSeconds: leaseSeconds, legacy: legacy, on: connection)
        }
    }

    /// Applies several agents' events in one transaction, each as ``apply(_:userID:leaseSeconds:legacy:recordingFiles:)``
    /// would, in the order given; returns their outcomes in that order. Either all of them count or, when
    /// this throws, none.
    public func apply(batch events: [(event: AgentEvent, userID: String?)], leaseSeconds: Int) async throws -> [EventOutcome] {
        try await database.transaction { connection in
            try events.map { try Self.apply($0.event, userID: $0.userID, leaseSeconds: leaseSeconds, on: connection) }
        }
    }

    static func apply(_ event: AgentEvent, userID: String?, leaseSeconds: Int, legacy: Bool = false,
                      on connection: PostgresConnection) throws -> EventOutcome {
        guard let builder = try connection.query("""
            SELECT id, broker_user, agent_session, last_seq, builderok, active, kind FROM builder WHERE name = $1 FOR UPDATE
            """, [event.builder]).first
        else { return .rejected("unknown builder \(event.builder)") }
        if let owner = builder["broker_user"], owner != userID {
            return .rejected("user \(userID ?? "(none)") may not speak for builder \(event.builder)")
        }
        // Agents speak for agent builders only; the legacy adapter (in-process, never from the broker) for
        // XML-RPC builders only.
        guard try builder.string("kind") == (legacy ? "xmlrpc" : "agent") else {
            return .rejected("builder \(event.builder) is not \(legacy ? "an XML-RPC builder" : "an agent")")
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
        // A finished build leaves the builder clean (its work folder is gone), whatever became of the build.
        try connection.execute("""
            UPDATE builder SET agent_session = $2, last_seq = $3, last_seen = now(), agent_state = coalesce($4, agent_state),
                   clean_status = CASE WHEN $5 THEN 'CLEAN' ELSE clean_status END
             WHERE id = $1
            """, [builderID, event.session, event.seq, newState?.rawValue, event.kind == .finished])

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

    private static func applyHeartbeat(_ event: AgentEvent, builderID: Int, leaseSeconds: Int,
                                       on connection: PostgresConnection) throws -> EventOutcome {
        if let buildID = event.buildID, let attempt = event.attempt, event.state != .idle {
            guard var loaded = try loadLifecycle(buildID, on: connection) else {
                return .abort(buildID: buildID, attempt: attempt, reason: "no build \(buildID)")
            }
            let ended = loaded.builderID.map { (Int32(loaded.attempt), $0) }
            switch loaded.machine.heartbeat(attempt: attempt, builder: builderID, now: loaded.now,
                                            lease: Double(leaseSeconds), endedAttempt: ended) {
            case .renew:
                try persistLease(loaded.machine, buildID: buildID, on: connection)
                if let tail = event.logTail {
                    try connection.execute("UPDATE buildqueue SET logtail = $2 WHERE build_id = $1", [buildID, tail])
                }
                return .applied("lease renewed")
            case let other:
                return unchanged(other, buildID: buildID)
            }
        }
        // The agent is idle: a build the database still gives it was lost (the agent restarted or forgot it).
        let held = try connection.query("""
            SELECT build_id FROM buildqueue WHERE builder_id = $1 AND state IN ('RUNNING', 'CANCELLING')
            """, [builderID]).rows.map { try $0.int64("build_id") }
        for buildID in held {
            guard var loaded = try loadLifecycle(buildID, on: connection) else { continue }
            try carryOut(loaded.machine.builderIdle(builder: builderID), &loaded, buildID: buildID,
                         builder: event.builder, on: connection, finishMessage: event.message)
        }
        return held.isEmpty ? .applied("\(event.kind.rawValue) \(event.state?.rawValue ?? "")")
            : .applied("requeued \(held.count) lost build(s)")
    }

    private static func applyAccepted(_ event: AgentEvent, builderID: Int, usable: Bool, leaseSeconds: Int,
                                      on connection: PostgresConnection) throws -> EventOutcome {
        let buildID = event.buildID!
        let attempt = event.attempt!
        guard var loaded = try loadLifecycle(buildID, on: connection) else {
            return .abort(buildID: buildID, attempt: attempt, reason: "no build \(buildID)")
        }
        let busy = try connection.query("""
            SELECT 1 FROM buildqueue WHERE builder_id = $1 AND state IN ('RUNNING', 'CANCELLING') AND build_id <> $2
            """, [builderID, buildID]).first != nil
        let claimedAt: Double? = if case .dispatched(_, let since) = loaded.machine.state { since } else { nil }
        switch loaded.machine.accepted(attempt: attempt, builder: builderID, builderUsable: usable, builderBusy: busy,
                                       now: loaded.now, lease: Double(leaseSeconds)) {
        case .start:
            if let claimedAt { BuilddMetrics.dispatchLatency(seconds: loaded.now - claimedAt) }
            try persistLease(loaded.machine, buildID: buildID, on: connection)
            try connection.execute("""
                UPDATE build SET status = 'BUILDING', builder_id = $2, date_started = now() WHERE id = $1
                """, [buildID, builderID])
            try connection.execute("UPDATE builder SET agent_state = 'BUILDING', clean_status = 'DIRTY' WHERE id = $1",
                                   [builderID])
            try recordEvent(connection, build: buildID, status: .building, attempt: Int(attempt), builder: event.builder,
                            message: nil)
            return .applied("build \(buildID) attempt \(attempt) started on \(event.builder)")
        case let other:
            return unchanged(other, buildID: buildID)
        }
    }

    private static func applyFinished(_ event: AgentEvent, builderID: Int,
                                      on connection: PostgresConnection) throws -> EventOutcome {
        let buildID = event.buildID!
        let attempt = event.attempt!
        let result = event.result!
        guard var loaded = try loadLifecycle(buildID, on: connection) else { return .ignored("no build \(buildID)") }
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
        let action = loaded.machine.finished(attempt: attempt, builder: builderID, result: result, filesMissing: missing)
        if case .ignore(let why) = action { return .ignored("build \(buildID): \(why)") }
        if let log = event.log, !missing.contains(log.name) {
            try connection.execute("UPDATE build SET log_name = $2, log_sha256 = $3 WHERE id = $1",
                                   [buildID, log.name, log.sha256])
        }
        // A finished build gets its result with its final status (finishBuild); a failure keeps it here.
        if case .finish = action {} else {
            try connection.execute("UPDATE build SET result = $2 WHERE id = $1", [buildID, result.rawValue])
        }
        if case .finish(.fullyBuilt, _) = action {
            try recordEvent(connection, build: buildID, status: .gathering, attempt: Int(attempt),
                            builder: event.builder, message: "\(event.files?.count ?? 0) file(s) verified")
        }
        let message = event.message ?? result.rawValue
        try carryOut(action, &loaded, buildID: buildID, builder: event.builder, on: connection,
                     finishMessage: message, result: result)
        switch action {
        case .finish(let status, _): return .applied("build \(buildID) \(status.rawValue)")
        default: return .applied("build \(buildID) \(result.rawValue), counted")
        }
    }

    /// The outcome of an action that changes nothing: an abort to send, or an event to ignore.
    static func unchanged(_ action: BuildLifecycle.Action, buildID: Int64) -> EventOutcome {
        switch action {
        case .abort(let attempt, let reason):
            return .abort(buildID: buildID, attempt: attempt, reason: "build \(buildID): \(reason)")
        case .ignore(let why):
            return .ignored(why)
        default:
            return .ignored("no change for build \(buildID)")
        }
    }

    /// Does what a lifecycle action asks: finish, count a failure (then retry or fail), requeue.
    static func carryOut(_ action: BuildLifecycle.Action, _ loaded: inout LoadedLifecycle, buildID: Int64,
                         builder: String?, on connection: PostgresConnection, finishMessage: String? = nil,
                         result: BuilderResult? = nil) throws {
        switch action {
        case .finish(let status, let builderFailure):
            try finishBuild(connection, buildID: buildID, attempt: loaded.attempt, builder: builder, status: status,
                            result: result, message: status == .fullyBuilt ? nil : finishMessage)
            if let builderID = loaded.builderID {
                if builderFailure {
                    try countBuilderFailure(connection, builderID: builderID, reason: "did not confirm an abort")
                } else if result != nil {
                    try connection.execute("UPDATE builder SET failure_count = 0 WHERE id = $1 AND failure_count <> 0",
                                           [builderID])
                }
            }
        case .countFailure(let reason):
            let detail = finishMessage.map { "\(reason): \($0)" } ?? "\(reason) (\(builder ?? "no builder"))"
            let retried = try countFailure(connection, buildID: buildID, attempt: loaded.attempt,
                                           builderID: loaded.builderID, builder: builder, reason: detail)
            loaded.machine.failureCounted(retry: retried)
        case .reclaim, .renew, .start, .requestAbort, .ignore, .abort:
            break
        }
    }
}
