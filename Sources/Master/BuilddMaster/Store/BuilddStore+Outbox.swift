import BuilddShared
import Postgres

/// The build events a master publishes on the broker, read from the builds' history (the outbox: each change
/// writes its line there in its own transaction) in the order the database committed them.
extension BuilddStore {
    /// One published build event: the JSON body of a message on `buildd.events`.
    public struct BuildEventMessage: Codable, Sendable, Equatable {
        /// The history line's id (the message id is `event-ID`).
        public let event: Int64
        public let build: Int64
        /// The line's place in its build's history, from 1: a consumer orders a build's events by it and knows
        /// a duplicate by it (publishing is at least once).
        public let seq: Int
        public let attempt: Int
        public let status: String
        public let time: String
        public let actor: String?
        public let builder: String?
        public let message: String?
        public let processor: String
        public let archseries: String
        public let archive: String
        public let source: String
        public let version: String

        /// Its routing key: `PROCESSOR.STATUS`.
        public var routingKey: String { "\(processor).\(status)" }
    }

    /// Where publishing is: the last line published, by the id of its transaction and its own.
    public struct EventCursor: Sendable, Equatable {
        public let xid: String
        public let id: Int64
    }

    /// Takes or renews the publisher's lease for `holder`; the cursor when `holder` holds it, nil when another
    /// master does.
    public func holdEventPublisher(holder: String, leaseSeconds: Double) async throws -> EventCursor? {
        guard let row = try await database.query("""
            UPDATE event_publisher SET holder = $1, lease_until = now() + make_interval(secs => $2)
             WHERE id = 1 AND (holder = $1 OR holder IS NULL OR lease_until < now())
            RETURNING cursor_xid::text AS xid, cursor_id
            """, [holder, leaseSeconds]).first else { return nil }
        return EventCursor(xid: try row.string("xid"), id: try row.int64("cursor_id"))
    }

    /// Moves the cursor on (only for the lease's holder, and only forward); false when `holder` lost the lease.
    public func advanceEventCursor(holder: String, to cursor: EventCursor) async throws -> Bool {
        try await database.query("""
            UPDATE event_publisher SET cursor_xid = $2::xid8, cursor_id = $3
             WHERE id = 1 AND holder = $1 AND (cursor_xid, cursor_id) < ($2::xid8, $3)
            RETURNING 1
            """, [holder, cursor.xid, cursor.id]).first != nil
    }

    /// Lets the lease go (a master stopping), so another master publishes at once.
    public func releaseEventPublisher(holder: String) async throws {
        _ = try await database.query("UPDATE event_publisher SET holder = NULL WHERE id = 1 AND holder = $1", [holder])
    }

    static let eventMessageColumns = """
        e.id AS event, e.xid::text AS xid, e.build_id, e.status, e.attempt, e.builder, e.message, e.actor,
        \(iso("e.at")) AS at, h.seq, h.ahead, pr.name AS processor, d.name || '/' || s.name || '/' || das.architecturetag AS archseries,
        b.archive_purpose, b.source_name, b.source_version
        """

    /// A line's place in its build's history (`seq`) and the build's earlier lines that (xid, id) order puts
    /// after it (`ahead`), from one pass over the build's lines.
    static let eventMessageJoins = """
        CROSS JOIN LATERAL (
            SELECT count(*) FILTER (WHERE p.id <= e.id) AS seq,
                   array_to_string(array_agg(p.id ORDER BY p.id) FILTER (
                       WHERE p.id < e.id AND p.xid IS NOT NULL AND (p.xid, p.id) > (e.xid, e.id)), ',') AS ahead
              FROM build_event p WHERE p.build_id = e.build_id) h
        JOIN build b ON b.id = e.build_id JOIN processor pr ON pr.id = b.processor_id
        JOIN distroarchseries das ON das.id = b.distroarchseries_id
        JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
        """

    static func eventMessage(_ row: PostgresRow) throws -> BuildEventMessage {
        BuildEventMessage(event: try row.int64("event"), build: try row.int64("build_id"), seq: try row.int("seq"),
                          attempt: try row.int("attempt"), status: try row.string("status"), time: try row.string("at"),
                          actor: row["actor"], builder: row["builder"], message: row["message"], processor: try row.string("processor"),
                          archseries: try row.string("archseries"), archive: try row.string("archive_purpose"),
                          source: try row.string("source_name"), version: try row.string("source_version"))
    }

    /// The next lines to publish after `cursor`, in publish order, and the cursor past them (nil: none).
    ///
    /// Only lines whose transaction is older than every transaction still running are taken (its id below
    /// the snapshot's xmin): no line can commit later with a smaller (xid, id), so the cursor never passes
    /// one. A build's lines follow its commits in id order (each change holds the build's row lock), but two
    /// transactions can take their ids in the other order; a line whose build has an earlier line that
    /// (xid, id) puts after it comes after that earlier line, which is published then as well (and again when
    /// the cursor reaches it: a duplicate its `seq` shows).
    public func eventsToPublish(after cursor: EventCursor, limit: Int) async throws
        -> (messages: [BuildEventMessage], next: EventCursor?) {
        try await database.withConnection { connection in
            let rows = try connection.query("""
                SELECT \(Self.eventMessageColumns)
                  FROM build_event e \(Self.eventMessageJoins)
                 WHERE e.xid IS NOT NULL AND (e.xid, e.id) > ($1::xid8, $2)
                   AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY e.xid, e.id LIMIT $3
                """, [cursor.xid, cursor.id, limit]).rows
            guard let last = rows.last else { return ([], nil) }
            var messages: [BuildEventMessage] = []
            var placed = Set<Int64>()
            for row in rows {
                let ahead = (row["ahead"] ?? "").split(separator: ",").compactMap { Int64($0) }.filter { !placed.contains($0) }
                if !ahead.isEmpty {
                    let earlier = try connection.query("""
                        SELECT \(Self.eventMessageColumns) FROM build_event e \(Self.eventMessageJoins)
                         WHERE e.id = ANY($1::bigint[]) ORDER BY e.id
                        """, [PostgresArray(ahead)]).rows
                    for line in earlier {
                        let message = try Self.eventMessage(line)
                        messages.append(message)
                        placed.insert(message.event)
                    }
                }
                let message = try Self.eventMessage(row)
                if placed.insert(message.event).inserted { messages.append(message) }
            }
            return (messages, EventCursor(xid: try last.string("xid"), id: try last.int64("event")))
        }
    }
}
