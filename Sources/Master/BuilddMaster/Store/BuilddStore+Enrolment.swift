import BuilddShared
import Postgres
import Synchronization

/// Join tokens, and build machines enrolling with them (``JoinToken``).
extension BuilddStore {
    /// Makes a join token good once, for `expiresInSeconds`, for machines of `processors`; returns it with
    /// what was stored (the token is shown once: only its SHA-256 is kept).
    public func addJoinToken(name: String, processors: [String], expiresInSeconds: Int, createdBy: String?)
        async throws -> MadeJoinToken {
        try Self.requireName(name, "token")
        guard !processors.isEmpty else { throw StoreError(.invalid, "a join token needs --processor (one or more)") }
        for processor in processors { try Self.requireName(processor, "processor") }
        guard (1...JoinToken.maxLifetimeSeconds).contains(expiresInSeconds) else {
            throw StoreError(.invalid, "a join token is good for at most \(JoinToken.maxLifetimeSeconds / 86400) days")
        }
        let token = "bdj_" + randomHexToken(bytes: 24)
        return try await database.transaction { connection in
            // One name space for API and join tokens: `token remove NAME` must mean one thing.
            if try connection.query("SELECT 1 FROM api_token WHERE name = $1", [name]).first != nil {
                throw StoreError(.alreadyExists, "token '\(name)' already exists")
            }
            let known = try connection.query("SELECT name FROM processor WHERE name = ANY ($1::text[])",
                                             [PostgresArray(processors)]).rows.map { try $0.string("name") }
            if let unknown = processors.first(where: { !known.contains($0) }) {
                throw StoreError(.notFound, "unknown processor '\(unknown)': add it with `processor add`")
            }
            do {
                let stored = try connection.query("""
                    INSERT INTO join_token (name, token_sha256, processors, expires_at, created_by)
                    VALUES ($1, $2, $3::text[], now() + make_interval(secs => $4::integer), $5)
                    RETURNING \(iso("expires_at")) AS expires_at
                    """, [name, SHA256.hex(of: token), PostgresArray(processors.sorted()), expiresInSeconds, createdBy])
                return MadeJoinToken(token: token, processors: processors.sorted(),
                                     expiresAt: try stored.rows[0].string("expires_at"))
            } catch let error as PostgresError where error.isUniqueViolation {
                throw StoreError(.alreadyExists, "token '\(name)' already exists")
            }
        }
    }

    public func joinTokens() async throws -> [JoinTokenSummary] {
        try await database.query("""
            SELECT name, array_to_string(processors, ',') AS processors, created_by, \(iso("created_at")) AS created_at,
                   \(iso("expires_at")) AS expires_at, extract(epoch FROM expires_at) AS expires, used_by,
                   \(iso("used_at")) AS used_at, extract(epoch FROM now()) AS now
              FROM join_token ORDER BY name
            """).rows.map {
            let verdict = JoinToken.judge(expiresAt: try $0.double("expires"), usedBy: $0["used_by"], now: try $0.double("now"))
            return JoinTokenSummary(name: try $0.string("name"),
                                    processors: try $0.string("processors").split(separator: ",").map(String.init),
                                    createdAt: try $0.string("created_at"), createdBy: $0["created_by"],
                                    expiresAt: try $0.string("expires_at"), usedBy: $0["used_by"], usedAt: $0["used_at"],
                                    state: verdict == .valid ? "valid" : verdict == .expired ? "expired" : "used")
        }
    }

    /// Removes a join token; false when there is none of that name.
    public func removeJoinToken(name: String) async throws -> Bool {
        try await database.query("DELETE FROM join_token WHERE name = $1", [name]).affectedRows > 0
    }

    /// What presenting a join token came to, when it did not enrol anything.
    public enum EnrolmentRefusal: Error, Equatable, Sendable, CustomStringConvertible {
        /// No such token (never made, removed, or not a join token).
        case unknownToken
        case refused(JoinToken.Verdict)

        public var description: String {
            switch self {
            case .unknownToken: "join token refused"
            case .refused(let verdict): verdict.description
            }
        }
    }

    /// Enrols a build machine as builder `name` with the join token `token`: checks the token
    /// (``JoinToken/judge(expiresAt:usedBy:now:)``), adds the builder (plain placement, its own broker user
    /// named like it) with the token's processors (or those asked, when the token has them all), spends the
    /// token, and calls `makeBrokerUser` with the builder's name and processors, all in one transaction: when
    /// the broker user cannot be made, nothing is enrolled and the token stays good. When the database fails
    /// after the user was made, `removeBrokerUser` takes it back, unless the token shows the enrolment was
    /// committed after all. `brokerSeconds` is the longest `makeBrokerUser` may take. Returns the processors.
    public func enrol(token: String, name: String, processors asked: [String]?, brokerSeconds: Int,
                      makeBrokerUser: @escaping @Sendable (_ name: String, _ processors: [String]) throws -> Void,
                      removeBrokerUser: @escaping @Sendable (_ name: String) -> Void)
        async throws -> [String] {
        try Self.requireName(name, "builder")
        for processor in asked ?? [] { try Self.requireName(processor, "processor") }
        let digest = SHA256.hex(of: token)
        let brokerUserMade = Mutex(false)
        do {
            return try await database.transaction { connection in
                // The broker's calls leave this transaction idle for up to `brokerSeconds`: the session's own
                // limit (a third of the lease, ``masterSessionSettings(leaseSeconds:)``) would end it under a
                // slow management API, after the user was made. What it holds meanwhile is this token's row
                // and a builder nobody else sees yet: nothing the event lanes or the dispatcher wait on.
                try connection.execute("SELECT set_config('idle_in_transaction_session_timeout', $1, true)",
                                       [String(max(1, brokerSeconds) * 1000)])
                guard let row = try connection.query("""
                    SELECT name, array_to_string(processors, ',') AS processors, extract(epoch FROM expires_at) AS expires,
                           used_by, extract(epoch FROM now()) AS now
                      FROM join_token WHERE token_sha256 = $1 FOR UPDATE
                    """, [digest]).first else { throw EnrolmentRefusal.unknownToken }
                let verdict = JoinToken.judge(expiresAt: try row.double("expires"), usedBy: row["used_by"],
                                              now: try row.double("now"))
                guard verdict == .valid else { throw EnrolmentRefusal.refused(verdict) }
                let allowed = try row.string("processors").split(separator: ",").map(String.init)
                let processors = asked.flatMap { $0.isEmpty ? nil : $0 } ?? allowed
                if let problem = JoinToken.processorsProblem(asked: processors, allowed: allowed) {
                    throw StoreError(.invalid, problem)
                }
                try Self.insertBuilder(name: name, processors: processors, url: nil, brokerUser: name, placement: .plain,
                                       on: connection)
                let tokenName = try row.string("name")
                try connection.execute("UPDATE join_token SET used_at = now(), used_by = $2 WHERE token_sha256 = $1",
                                       [digest, name])
                try connection.execute("""
                    INSERT INTO builder_event (builder, kind, actor, reason) VALUES ($1, 'added', $2, $3)
                    """, [name, "join-token:\(tokenName)", "enrolled itself for \(processors.joined(separator: ", "))"])
                try makeBrokerUser(name, processors)
                brokerUserMade.withLock { $0 = true }
                return processors
            }
        } catch {
            guard brokerUserMade.withLock({ $0 }) else { throw error }
            // The database failed after the broker user was made (the session ended, the link went, COMMIT
            // failed). When the token shows this builder, COMMIT got through and only its answer was lost: the
            // machine is enrolled. Otherwise nothing is, and the user goes too, so that no credentials outlive
            // a failed enrolment and the machine may try again under the same name. The database is asked
            // for a while (a lost link is often back in seconds); when it cannot be asked, the user goes too:
            // a builder without its broker user is the lesser fault (no credentials out, the operator sees it).
            if let processors = await committedEnrolment(digest: digest, name: name, within: .seconds(15)) {
                return processors
            }
            removeBrokerUser(name)
            throw error
        }
    }

    /// The processors of builder `name` when the join token `digest` shows it enrolled, nil when it does not
    /// or the database did not answer within `patience`.
    private func committedEnrolment(digest: String, name: String, within patience: Duration) async -> [String]? {
        let deadline = ContinuousClock.now + patience
        while true {
            do {
                guard let row = try await database.query("""
                    SELECT string_agg(p.name, ',' ORDER BY p.name) AS processors
                      FROM join_token t JOIN builder b ON b.name = t.used_by
                      JOIN builder_processor bp ON bp.builder_id = b.id JOIN processor p ON p.id = bp.processor_id
                     WHERE t.token_sha256 = $1 AND t.used_by = $2 GROUP BY b.id
                    """, [digest, name]).first else { return nil }
                return try row.string("processors").split(separator: ",").map(String.init)
            } catch {
                guard ContinuousClock.now < deadline else { return nil }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

extension BuilddStore {
    /// The waiting builds per processor and set of requirements (``BuilderDemand/Waiting``).
    public func waitingDemand() async throws -> [BuilderDemand.Waiting] {
        try await database.query("""
            SELECT p.name, q.virtualized, array_to_string(q.constraints, ',') AS constraints, count(*) AS waiting
              FROM buildqueue q JOIN processor p ON p.id = q.processor_id
             WHERE q.state = 'WAITING'
             GROUP BY p.name, q.virtualized, q.constraints
            """).rows.map {
            BuilderDemand.Waiting(
                processor: try $0.string("name"),
                requirements: BuildRequirements(virtualized: try $0.bool("virtualized"),
                                                constraints: Set((try $0.string("constraints")).split(separator: ",").map(String.init))),
                count: try $0.int("waiting"))
        }
    }
}

/// A join token as ``BuilddStore/addJoinToken(name:processors:expiresInSeconds:createdBy:)`` made it.
public struct MadeJoinToken: Sendable, Equatable {
    /// The secret, here and nowhere else.
    public var token: String
    public var processors: [String]
    public var expiresAt: String
}

public struct JoinTokenSummary: Codable, Sendable, Equatable {
    public var name: String
    public var processors: [String]
    public var createdAt: String
    public var createdBy: String?
    public var expiresAt: String
    /// The builder it enrolled, and when.
    public var usedBy: String?
    public var usedAt: String?
    /// `valid`, `expired` or `used`.
    public var state: String
    /// Always `enrol`: `token list --json` lists join tokens beside API tokens.
    public var role = "enrol"

    enum CodingKeys: String, CodingKey {
        case name, processors, state, role
        case createdAt = "created_at", createdBy = "created_by", expiresAt = "expires_at", usedBy = "used_by"
        case usedAt = "used_at"
    }
}
