import BuilddCore
import BuilddShared
import Postgres

/// Webhooks: build events delivered by HTTP POST, each webhook with its own cursor over the builds' history
/// (the outbox of ``eventsToPublish(after:limit:)``), moved on only past what its receiver took.
extension BuilddStore {
    /// A webhook as operators see it (never its secret).
    public struct Webhook: Codable, Sendable, Equatable {
        public let id: Int
        public let name: String
        public let url: String
        /// The build statuses it gets; empty: all.
        public let statuses: [String]
        /// Whether it gets private archives' builds' events.
        public let `private`: Bool
        public let enabled: Bool
        public let disabledReason: String?
        /// Failed attempts in a row, and since when it fails.
        public let failures: Int
        public let failingSince: String?
        public let nextAttempt: String

        enum CodingKeys: String, CodingKey {
            case id, name, url, statuses, `private`, enabled, failures
            case disabledReason = "disabled_reason", failingSince = "failing_since", nextAttempt = "next_attempt"
        }
    }

    /// One attempt to deliver an event.
    public struct WebhookDelivery: Codable, Sendable, Equatable {
        public let id: Int64
        public let event: Int64
        public let build: Int64
        public let status: String
        /// The receiver's answer (nil when there was none: refused, timed out).
        public let httpStatus: Int?
        public let error: String?
        public let at: String
        public let durationMs: Int

        enum CodingKeys: String, CodingKey {
            case id, event, build, status, error, at
            case httpStatus = "http_status", durationMs = "duration_ms"
        }
    }

    /// A webhook due for delivery, with what the deliverer needs.
    public struct DueWebhook: Sendable {
        public let id: Int
        public let name: String
        public let url: String
        public let statuses: Set<String>
        public let secret: String
        public let `private`: Bool
        public let cursor: EventCursor
        /// Failed attempts in a row so far.
        public let failures: Int

        /// Whether it gets `message`: a status it asked for, and a private build only when it may see them.
        public func wants(_ message: BuildEventMessage) -> Bool {
            (statuses.isEmpty || statuses.contains(message.status))
                && (message.archive != ArchivePurpose.private.rawValue || `private`)
        }
    }

    static let webhookColumns = """
        id, name, url, array_to_string(statuses, ',') AS statuses, private, enabled, disabled_reason, failures, \(iso("failing_since")) AS failing_since,
        \(iso("next_attempt")) AS next_attempt
        """

    static func list(_ text: String?) -> [String] {
        (text ?? "").split(separator: ",").map(String.init)
    }

    static func webhook(_ row: PostgresRow) throws -> Webhook {
        Webhook(id: try row.int("id"), name: try row.string("name"), url: try row.string("url"),
                statuses: Self.list(row["statuses"]), private: try row.bool("private"), enabled: try row.bool("enabled"),
                disabledReason: row["disabled_reason"], failures: try row.int("failures"), failingSince: row["failing_since"],
                nextAttempt: try row.string("next_attempt"))
    }

    /// Adds a webhook that gets the events committed from now on.
    public func addWebhook(name: String, url: String, statuses: [String], secret: String, private: Bool) async throws -> Webhook {
        try Self.requireName(name, "webhook")
        guard let parsed = try? ServiceURL(parsing: url), parsed.scheme == "https" || parsed.scheme == "http" else {
            throw StoreError(.invalid, "webhook URL must be an http:// or https:// URL: \(url)")
        }
        let known = Set(BuildStatus.allCases.map(\.rawValue))
        if let unknown = statuses.first(where: { !known.contains($0) }) {
            throw StoreError(.invalid, "unknown build status \(unknown): one of \(BuildStatus.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard secret.utf8.count >= 16 else { throw StoreError(.invalid, "a webhook secret has at least 16 bytes") }
        do {
            // From now: the oldest transaction still running, so that nothing committed after this is missed.
            let row = try await database.query("""
                INSERT INTO webhook (name, url, statuses, secret, private, cursor_xid)
                VALUES ($1, $2, $3::text[], $4, $5, pg_snapshot_xmin(pg_current_snapshot()))
                RETURNING \(Self.webhookColumns)
                """, [name, url, PostgresArray(statuses), secret, `private`]).first!
            return try Self.webhook(row)
        } catch let error as PostgresError where error.sqlState == "23505" {
            throw StoreError(.conflict, "a webhook named \(name) exists")
        }
    }

    public func webhooks() async throws -> [Webhook] {
        try await database.query("SELECT \(Self.webhookColumns) FROM webhook ORDER BY name").rows.map(Self.webhook)
    }

    /// Enables a webhook (its failures forgotten, delivered at once, from where it stopped) or disables it.
    public func setWebhook(name: String, enabled: Bool, reason: String? = nil) async throws {
        let changed = try await database.query("""
            UPDATE webhook SET enabled = $2, disabled_reason = CASE WHEN $2 THEN NULL ELSE $3 END,
                   failures = CASE WHEN $2 THEN 0 ELSE failures END,
                   failing_since = CASE WHEN $2 THEN NULL ELSE failing_since END,
                   next_attempt = CASE WHEN $2 THEN now() ELSE next_attempt END
             WHERE name = $1 RETURNING 1
            """, [name, enabled, reason ?? "disabled by hand"]).first != nil
        guard changed else { throw StoreError(.notFound, "no webhook named \(name)") }
    }

    public func removeWebhook(name: String) async throws {
        guard try await database.query("DELETE FROM webhook WHERE name = $1 RETURNING 1", [name]).first != nil else {
            throw StoreError(.notFound, "no webhook named \(name)")
        }
    }

    /// A webhook's latest delivery attempts, newest first.
    public func webhookDeliveries(name: String, limit: Int = 50) async throws -> [WebhookDelivery] {
        guard try await database.query("SELECT 1 FROM webhook WHERE name = $1", [name]).first != nil else {
            throw StoreError(.notFound, "no webhook named \(name)")
        }
        return try await database.query("""
            SELECT d.id, d.event_id, d.build_id, d.status, d.http_status, d.error, \(iso("d.at")) AS at, d.duration_ms
              FROM webhook_delivery d JOIN webhook w ON w.id = d.webhook_id
             WHERE w.name = $1 ORDER BY d.id DESC LIMIT $2
            """, [name, max(1, min(limit, 1000))]).rows.map {
            WebhookDelivery(id: try $0.int64("id"), event: try $0.int64("event_id"), build: try $0.int64("build_id"),
                            status: try $0.string("status"), httpStatus: $0.optionalInt64("http_status").map(Int.init), error: $0["error"],
                            at: try $0.string("at"), durationMs: try $0.int("duration_ms"))
        }
    }

    // MARK: Delivering

    /// Whether any webhook is enabled (what the deliverer asks before it takes its lease).
    public func anyWebhookEnabled() async throws -> Bool {
        try await database.query("SELECT EXISTS (SELECT 1 FROM webhook WHERE enabled) AS any").first?.bool("any") ?? false
    }

    /// Takes or renews the deliverer's lease for `holder`; false when another master holds it.
    public func holdWebhookDeliverer(holder: String, leaseSeconds: Double) async throws -> Bool {
        try await database.query("""
            UPDATE webhook_deliverer SET holder = $1, lease_until = now() + make_interval(secs => $2)
             WHERE id = 1 AND (holder = $1 OR holder IS NULL OR lease_until < now())
            RETURNING 1
            """, [holder, leaseSeconds]).first != nil
    }

    public func releaseWebhookDeliverer(holder: String) async throws {
        _ = try await database.query("UPDATE webhook_deliverer SET holder = NULL WHERE id = 1 AND holder = $1", [holder])
    }

    /// The enabled webhooks whose next attempt is due (or the one with `id`, if it is).
    public func dueWebhooks(id: Int? = nil) async throws -> [DueWebhook] {
        try await database.query("""
            SELECT id, name, url, array_to_string(statuses, ',') AS statuses, secret, private, cursor_xid::text AS xid, cursor_id, failures
              FROM webhook WHERE enabled AND next_attempt <= now() AND ($1::int IS NULL OR id = $1) ORDER BY id
            """, [id]).rows.map {
            DueWebhook(id: try $0.int("id"), name: try $0.string("name"), url: try $0.string("url"),
                       statuses: Set(Self.list($0["statuses"])), secret: try $0.string("secret"),
                       private: try $0.bool("private"), cursor: EventCursor(xid: try $0.string("xid"), id: try $0.int64("cursor_id")),
                       failures: try $0.int("failures"))
        }
    }

    /// An attempt's outcome, for the delivery log.
    public struct DeliveryAttempt: Sendable {
        public let message: BuildEventMessage
        public let httpStatus: Int?
        public let error: String?
        public let milliseconds: Int

        public init(message: BuildEventMessage, httpStatus: Int?, error: String?, milliseconds: Int) {
            self.message = message
            self.httpStatus = httpStatus
            self.error = error
            self.milliseconds = milliseconds
        }
    }

    /// Records what a round delivered and moves the webhook's cursor past it (only forward); its failures are
    /// forgotten. The delivery log keeps the last 1,000 attempts.
    public func webhookDelivered(id: Int, through cursor: EventCursor, attempts: [DeliveryAttempt]) async throws {
        try await database.transaction { connection in
            _ = try connection.query("""
                UPDATE webhook SET cursor_xid = $2::xid8, cursor_id = $3, failures = 0, failing_since = NULL
                 WHERE id = $1 AND (cursor_xid, cursor_id) < ($2::xid8, $3)
                """, [id, cursor.xid, cursor.id])
            try Self.log(attempts, webhook: id, on: connection)
        }
    }

    /// Records a failed attempt: the next comes after `retryAfter` seconds; a webhook failing for longer than
    /// `giveUpAfter` seconds is disabled (true), and says why.
    public func webhookFailed(id: Int, attempt: DeliveryAttempt, delivered: [DeliveryAttempt], retryAfter: Double,
                              giveUpAfter: Double) async throws -> Bool {
        try await database.transaction { connection in
            try Self.log(delivered + [attempt], webhook: id, on: connection)
            let why = "failing since %s: " + (attempt.error ?? attempt.httpStatus.map { "HTTP \($0)" } ?? "no answer")
            return try connection.query("""
                UPDATE webhook SET failures = failures + 1, failing_since = coalesce(failing_since, now()),
                       next_attempt = now() + make_interval(secs => $2),
                       enabled = coalesce(failing_since, now()) >= now() - make_interval(secs => $3),
                       disabled_reason = CASE WHEN coalesce(failing_since, now()) >= now() - make_interval(secs => $3)
                                              THEN NULL ELSE format($4, failing_since) END
                 WHERE id = $1 RETURNING NOT enabled AS disabled
                """, [id, retryAfter, giveUpAfter, why]).first?.bool("disabled") ?? false
        }
    }

    static func log(_ attempts: [DeliveryAttempt], webhook id: Int, on connection: PostgresConnection) throws {
        guard !attempts.isEmpty else { return }
        _ = try connection.query("""
            INSERT INTO webhook_delivery (webhook_id, event_id, build_id, status, http_status, error, duration_ms)
            SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::int[], $6::text[], $7::int[])
            """, [id, PostgresArray(attempts.map(\.message.event)), PostgresArray(attempts.map(\.message.build)),
                  PostgresArray(attempts.map(\.message.status)), PostgresArray(attempts.map { $0.httpStatus }),
                  PostgresArray(attempts.map { $0.error }), PostgresArray(attempts.map(\.milliseconds))])
        _ = try connection.query("""
            DELETE FROM webhook_delivery WHERE webhook_id = $1 AND id < (
                SELECT min(id) FROM (SELECT id FROM webhook_delivery WHERE webhook_id = $1 ORDER BY id DESC LIMIT 1000) kept)
            """, [id])
    }
}
