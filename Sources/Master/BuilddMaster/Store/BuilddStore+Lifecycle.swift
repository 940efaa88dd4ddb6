import BuilddShared
import Postgres

/// Loading a queue row into a ``BuildLifecycle`` and writing its state back.
extension BuilddStore {
    struct LoadedLifecycle {
        var machine: BuildLifecycle
        /// The database's clock, in epoch seconds: every master judges time by it.
        let now: Double
        let attempt: Int
        let builderID: Int?
        let builderName: String?
    }

    /// Locks the build (and its queue row, if any) and loads its lifecycle.
    static func loadLifecycle(_ buildID: Int64, on connection: PostgresConnection) throws -> LoadedLifecycle? {
        guard let row = try connection.query("""
            SELECT b.attempt, b.builder_id AS build_builder, q.state, q.builder_id, bl.name AS builder_name,
                   extract(epoch FROM q.dispatched_at) AS dispatched, extract(epoch FROM q.lease_expires) AS lease,
                   extract(epoch FROM now()) AS now
              FROM build b LEFT JOIN buildqueue q ON q.build_id = b.id
              LEFT JOIN builder bl ON bl.id = coalesce(q.builder_id, b.builder_id)
             WHERE b.id = $1 FOR UPDATE OF b
            """, [buildID]).first
        else { return nil }
        if row["state"] != nil {
            _ = try connection.query("SELECT 1 FROM buildqueue WHERE build_id = $1 FOR UPDATE", [buildID])
        }
        let attempt = try row.int("attempt")
        let queueBuilder = row["builder_id"].flatMap(Int.init)
        let state: BuildLifecycle.State
        switch row["state"] {
        case "WAITING": state = .waiting
        case "DISPATCHED": state = .dispatched(attempt: Int32(attempt), since: row.optionalDouble("dispatched") ?? 0)
        case "RUNNING": state = .running(attempt: Int32(attempt), builder: queueBuilder ?? 0,
                                         leaseUntil: row.optionalDouble("lease") ?? 0)
        case "CANCELLING": state = .cancelling(attempt: Int32(attempt), builder: queueBuilder ?? 0,
                                               deadline: row.optionalDouble("lease") ?? 0)
        default: state = .done
        }
        return LoadedLifecycle(machine: BuildLifecycle(state: state), now: try row.double("now"), attempt: attempt,
                               builderID: queueBuilder ?? row["build_builder"].flatMap(Int.init),
                               builderName: row["builder_name"])
    }

    /// Writes the queue row of a running or cancelling build from the machine's state.
    static func persistLease(_ machine: BuildLifecycle, buildID: Int64, on connection: PostgresConnection) throws {
        switch machine.state {
        case .running(_, let builder, let leaseUntil):
            try connection.execute("""
                UPDATE buildqueue SET state = 'RUNNING', builder_id = $2, lease_expires = to_timestamp($3) WHERE build_id = $1
                """, [buildID, builder, leaseUntil])
        case .cancelling(_, let builder, let deadline):
            try connection.execute("""
                UPDATE buildqueue SET state = 'CANCELLING', builder_id = $2, lease_expires = to_timestamp($3),
                       abort_sent_at = NULL
                 WHERE build_id = $1
                """, [buildID, builder, deadline])
        default:
            break
        }
    }
}
