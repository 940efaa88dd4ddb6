import BuilddShared
import Postgres

/// The queue in dispatch order, API tokens, and removing processors and builders.
extension BuilddStore {
    /// The waiting builds of `processor` in the order they will be dispatched (score, then age).
    /// Builds of archives not in `visible` are left out (the positions are those the caller sees).
    public func queue(processor: String, limit: Int = 100,
                      visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> [QueueEntry] {
        guard try await database.query("SELECT 1 FROM processor WHERE name = $1", [processor]).first != nil else {
            throw StoreError(.notFound, "no processor named '\(processor)'")
        }
        var entries = try await database.query("""
            SELECT q.build_id, q.lastscore, q.manual, extract(epoch FROM now() - q.date_queued) AS waiting,
                   q.virtualized, array_to_string(q.constraints, ',') AS constraints,
                   b.source_name, b.source_version, b.build_type,
                   d.name || '/' || s.name || '/' || das.architecturetag AS archseries
              FROM buildqueue q JOIN processor p ON p.id = q.processor_id JOIN build b ON b.id = q.build_id
              JOIN distroarchseries das ON das.id = b.distroarchseries_id
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             WHERE p.name = $1 AND q.state = 'WAITING' AND \(Self.visibleArchiveCondition(parameter: 3))
             ORDER BY q.lastscore DESC, q.id LIMIT $2
            """, [processor, limit, Self.archiveNames(visible)]).rows.enumerated().map { index, row in
            QueueEntry(position: index + 1, id: try row.int64("build_id"), archSeries: try row.string("archseries"),
                       source: try row.string("source_name"), version: try row.string("source_version"),
                       buildType: try row.string("build_type"), score: try row.int("lastscore"),
                       manual: try row.bool("manual"), waitingSeconds: try row.double("waiting"),
                       requirements: BuildRequirements(virtualized: try row.bool("virtualized"),
                                                       constraints: Self.resources(row["constraints"])))
        }
        // Each entry that no idle builder may take says why, judged once per kind of requirement.
        let candidates = try await placementCandidates(processor: processor)
        var reasons: [String: String?] = [:]
        for index in entries.indices {
            guard let requirements = entries[index].requirements else { continue }
            let key = requirements.description
            if reasons[key] == nil {
                reasons[key] = .some(Placement.whyWaiting(requirements, processor: processor, builders: candidates))
            }
            entries[index].waitingBecause = reasons[key] ?? nil
        }
        return entries
    }

    /// The builders of `processor` as ``Placement/whyWaiting(_:processor:builders:)`` judges them.
    func placementCandidates(processor: String) async throws -> [Placement.Candidate] {
        let silence = Double(Self.agentSilenceSeconds)
        return try await builders().filter { $0.processors.contains(processor) }.map {
            Placement.Candidate(name: $0.name, placement: $0.placement ?? .plain,
                                availability: $0.availability(silentAfterSeconds: silence))
        }
    }

    // MARK: API tokens

    /// Creates a token for the JSON API with `role`, good for `expiresInSeconds` when given; returns it
    /// (only its digest is stored).
    public func addToken(name: String, role: Role, expiresInSeconds: Int? = nil, createdBy: String? = nil)
        async throws -> String {
        try Self.requireName(name, "token")
        let token = "bdt_" + randomHexToken(bytes: 24)
        do {
            try await database.query("""
                INSERT INTO api_token (name, token_sha256, role, expires_at, created_by)
                VALUES ($1, $2, $3, now() + make_interval(secs => $4::integer), $5)
                """, [name, SHA256.hex(of: token), role.rawValue, expiresInSeconds, createdBy])
        } catch let error as PostgresError where error.isUniqueViolation {
            throw StoreError(.alreadyExists, "token '\(name)' already exists")
        }
        return token
    }

    public func tokens() async throws -> [APIToken] {
        let rows = try await database.query("""
            SELECT name, role, created_by, \(iso("created_at")) AS created_at, \(iso("last_used")) AS last_used,
                   \(iso("expires_at")) AS expires_at, extract(epoch FROM expires_at) AS expires,
                   extract(epoch FROM now()) AS now
              FROM api_token ORDER BY name
            """).rows
        return try rows.map {
            APIToken(name: try $0.string("name"), role: Role(rawValue: try $0.string("role")) ?? .viewer,
                     createdAt: try $0.string("created_at"), createdBy: $0["created_by"], lastUsed: $0["last_used"],
                     expiresAt: $0["expires_at"],
                     expired: !Access.tokenIsLive(expiresAt: $0.optionalDouble("expires"), now: try $0.double("now")))
        }
    }

    public func removeToken(name: String) async throws {
        let removed = try await database.query("DELETE FROM api_token WHERE name = $1", [name])
        if removed.affectedRows == 0 { throw StoreError(.notFound, "no token named '\(name)'") }
    }

    /// What presenting `token` comes to.
    public enum TokenCheck: Equatable, Sendable {
        case valid(Caller)
        /// Unknown, removed or malformed.
        case refused
        case expired(name: String)
    }

    /// Checks an API token; a valid one's use is noted (`last_used`).
    public func authorizeAPI(token: String) async throws -> TokenCheck {
        guard token.hasPrefix("bdt_"), token.utf8.count < 200 else { return .refused }
        let digest = SHA256.hex(of: token)
        guard let row = try await database.query("""
            SELECT name, role, extract(epoch FROM expires_at) AS expires, extract(epoch FROM now()) AS now
              FROM api_token WHERE token_sha256 = $1
            """, [digest]).first, let role = Role(rawValue: try row.string("role")) else { return .refused }
        let name = try row.string("name")
        guard Access.tokenIsLive(expiresAt: row.optionalDouble("expires"), now: try row.double("now")) else {
            return .expired(name: name)
        }
        try await database.query("UPDATE api_token SET last_used = now() WHERE token_sha256 = $1", [digest])
        return .valid(Caller(name: name, role: role))
    }

    // MARK: Removing

    /// Removes a processor that has never had a build: its arch series, its builders' links to it and its
    /// row. Refuses while builds of it wait or run, and when finished builds keep it in their history.
    public func removeProcessor(_ name: String) async throws {
        try await database.transaction { connection in
            guard let row = try connection.query("SELECT id FROM processor WHERE name = $1 FOR UPDATE", [name]).first else {
                throw StoreError(.notFound, "no processor named '\(name)'")
            }
            let id = try row.int("id")
            let queued = try connection.query("SELECT count(*) AS n FROM buildqueue WHERE processor_id = $1", [id])
                .first!.int("n")
            if queued > 0 {
                throw StoreError(.conflict, "processor '\(name)' has \(queued) build(s) waiting or running: "
                                 + "cancel them or let them finish first")
            }
            let history = try connection.query("SELECT count(*) AS n FROM build WHERE processor_id = $1", [id]).first!.int("n")
            if history > 0 {
                throw StoreError(.conflict, "processor '\(name)' has \(history) finished build(s) in its history and "
                                 + "stays; disable its builders instead")
            }
            try connection.execute("DELETE FROM builder_processor WHERE processor_id = $1", [id])
            try connection.execute("DELETE FROM distroarchseries WHERE processor_id = $1", [id])
            try connection.execute("DELETE FROM processor WHERE id = $1", [id])
        }
    }

    /// Removes a builder that runs nothing; its finished builds keep its name in their history.
    public func removeBuilder(_ name: String) async throws {
        try await database.transaction { connection in
            guard let row = try connection.query("SELECT id FROM builder WHERE name = $1 FOR UPDATE", [name]).first else {
                throw StoreError(.notFound, "no builder named '\(name)'")
            }
            let id = try row.int("id")
            if let running = try connection.query("""
                SELECT build_id FROM buildqueue WHERE builder_id = $1 AND \(QueueRecord.State.sqlHolds("state"))
                """, [id]).first {
                throw StoreError(.conflict, "builder '\(name)' is running build \(try running.int64("build_id")): "
                                 + "disable it and wait, or cancel the build")
            }
            try connection.execute("UPDATE buildqueue SET builder_id = NULL WHERE builder_id = $1", [id])
            try connection.execute("UPDATE build SET builder_id = NULL WHERE builder_id = $1", [id])
            try connection.execute("DELETE FROM builder WHERE id = $1", [id])
        }
    }

    /// One builder with its latest builds (of the archives in `visible`).
    public func builder(_ name: String, recent: Int = 20,
                        visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> (BuilderSummary, [BuildSummary]) {
        guard let summary = try await builders().first(where: { $0.name == name }) else {
            throw StoreError(.notFound, "no builder named '\(name)'")
        }
        // By the builder's id, planned with its value (not prepared): its own index then serves a builder with few
        // builds as fast as one with many.
        let id = try await id(of: .builder, named: name)
        let recentBuilds = try await database.query("""
            SELECT \(Self.buildSummaryColumns) FROM \(Self.buildSummaryJoins)
             WHERE b.builder_id = $1 AND \(Self.visibleArchiveCondition(parameter: 3))
             ORDER BY b.id DESC LIMIT $2
            """, [id, recent, Self.archiveNames(visible)], prepare: false).rows.map(Self.buildSummary)
        return (summary, recentBuilds)
    }
}
