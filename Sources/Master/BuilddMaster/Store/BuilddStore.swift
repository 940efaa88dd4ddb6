import BuilddShared
import Postgres
import Synchronization

/// SQL text for an ISO 8601 UTC timestamp of a column.
func iso(_ column: String) -> String {
    "to_char(\(column) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
}

/// The build farm's state in PostgreSQL: processors, series, builders, builds and their queue.
///
/// Every statement takes parameters; names are validated before they reach SQL.
public final class BuilddStore: Sendable {
    public let database: PostgresDatabase
    /// The archives and their dependencies, as a dispatch last read them (``archiveSnapshot()``).
    let archiveCache = Mutex<(read: ContinuousClock.Instant, snapshot: ArchiveSnapshot)?>(nil)

    public init(database: PostgresDatabase) {
        self.database = database
    }

    public convenience init(url: String, connections: Int = 4, applicationName: String = "buildd",
                            settings: [(String, String)] = []) {
        self.init(database: PostgresDatabase(url: url, connections: connections, applicationName: applicationName,
                                             settings: settings))
    }

    /// What a master sets on each of its database sessions, so that no session, its own or one a cut link left
    /// on the server, holds anything for longer than a third of the lease (the time a master has to hand its
    /// status shards on before its builders' leases run out):
    ///
    /// - `idle_in_transaction_session_timeout`: a session idle inside a transaction is ended by the server.
    ///   A master cut off from the database in the middle of a transaction leaves that session on the server,
    ///   holding the row locks of the builders it was updating; without this it holds them until the server's
    ///   TCP keepalives find the client gone (two hours by default), and every other master that applies those
    ///   builders' events waits on the locks - its event lanes, and every call queued behind them, stop.
    /// - `lock_timeout`: a statement waits that long for a lock, then fails (55P03, a transient failure that is
    ///   retried), rather than forever.
    /// - the server's TCP keepalives and `tcp_user_timeout` on this session's socket: the server finds a
    ///   partitioned master's sessions gone in seconds, as the master's own settings find the server gone.
    public static func masterSessionSettings(leaseSeconds: Int) -> [(String, String)] {
        let third = String(max(1000, leaseSeconds * 1000 / 3))
        return [("idle_in_transaction_session_timeout", third), ("lock_timeout", third),
                ("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3"),
                ("tcp_user_timeout", third)]
    }

    public func shutdown() { database.shutdown() }

    static func requireName(_ name: String, _ what: String) throws {
        guard Naming.isValidName(name) else {
            throw StoreError(.invalid, "invalid \(what) name '\(name)': use lowercase letters, digits and .+_- "
                + "(at most 64, starting with a letter or digit)")
        }
    }

    // MARK: Schema

    @discardableResult
    public func migrate(progress: @escaping @Sendable (Migration) -> Void = { _ in }) async throws -> [Int] {
        try await database.withConnection { try Migrations.migrate($0, progress: progress) }
    }

    /// Whether the database takes writes: a primary, not read-only (a standby after a failover this master
    /// has not followed yet, or a primary set `default_transaction_read_only`, answers `SELECT 1` but no write).
    public func acceptsWrites() async throws -> Bool {
        try await database.query("""
            SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off' AS writable
            """).first?.bool("writable") ?? false
    }

    /// Throws unless this binary can serve the database's schema (``Migrations/standing(_:)``).
    @discardableResult
    public func requireCurrentSchema() async throws -> Migrations.Standing {
        try await database.withConnection { try Migrations.requireCurrent($0) }
    }

    // MARK: Processors

    /// Adds a processor; returns false when it already existed.
    @discardableResult
    public func addProcessor(_ name: String) async throws -> Bool {
        try Self.requireName(name, "processor")
        let inserted = try await database.query(
            "INSERT INTO processor (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", [name])
        return inserted.affectedRows == 1
    }

    public func processorNames() async throws -> [String] {
        try await database.query("SELECT name FROM processor ORDER BY name").rows.map { try $0.string("name") }
    }

    /// The names of the processors and of the agent builders: the queues masters declare (job queues, and
    /// each agent's control queue: agents may not declare or bind anything themselves). One round trip.
    public func brokerTopologyNames() async throws -> BrokerTopologyNames {
        // Control queues: every agent's, and every builder's that gets jobs addressed to it (a legacy
        // builder's adapter takes them there). Processors with such builders get addressed claims.
        let rows = try await database.query("""
            SELECT 'p' AS what, name FROM processor
            UNION ALL SELECT 'c', name FROM builder b WHERE kind = 'agent' OR NOT \(Placement.sqlTakesSharedQueue(builder: "b"))
            UNION ALL SELECT DISTINCT 'a', p.name FROM processor p JOIN builder_processor bp ON bp.processor_id = p.id
                JOIN builder b ON b.id = bp.builder_id WHERE b.active AND NOT \(Placement.sqlTakesSharedQueue(builder: "b"))
             ORDER BY 1, 2
            """).rows
        var names = BrokerTopologyNames()
        for row in rows {
            let name = try row.string("name")
            switch try row.string("what") {
            case "p": names.processors.append(name)
            case "c": names.controlQueues.append(name)
            default: names.addressed.insert(name)
            }
        }
        return names
    }

    public func processors() async throws -> [ProcessorSummary] {
        let rows = try await database.query("""
            SELECT p.name,
                   (SELECT count(*) FROM buildqueue q WHERE q.processor_id = p.id AND q.state = 'WAITING') AS waiting,
                   (SELECT count(*) FROM buildqueue q WHERE q.processor_id = p.id AND q.state = 'DISPATCHED') AS dispatched,
                   (SELECT count(*) FROM buildqueue q WHERE q.processor_id = p.id
                        AND \(QueueRecord.State.sqlHolds("q.state"))) AS running,
                   (SELECT count(*) FROM builder_processor bp WHERE bp.processor_id = p.id) AS builders,
                   (SELECT count(*) FROM builder_processor bp JOIN builder b ON b.id = bp.builder_id
                     WHERE bp.processor_id = p.id AND \(Self.idleBuilderCondition)) AS idle,
                   (SELECT count(*) FROM builder_processor bp JOIN builder b ON b.id = bp.builder_id
                     WHERE bp.processor_id = p.id AND b.builderok AND b.active AND NOT b.manual) AS usable,
                   (SELECT extract(epoch FROM now() - min(q.date_queued)) FROM buildqueue q
                     WHERE q.processor_id = p.id AND q.state = 'WAITING') AS oldest_wait,
                   (SELECT avg(extract(epoch FROM r.date_finished - r.date_started))
                      FROM (SELECT date_started, date_finished FROM build
                             WHERE processor_id = p.id AND status = 'FULLYBUILT' AND date_started IS NOT NULL
                             ORDER BY id DESC LIMIT 50) r) AS average_build
              FROM processor p ORDER BY p.name
            """, [Self.agentSilenceSeconds])
        return try rows.rows.map {
            let waiting = try $0.int("waiting")
            let usable = try $0.int("usable")
            let average = $0.optionalDouble("average_build")
            // The queue drains at one build per usable builder per average build time; with no usable
            // builder or no history there is no estimate.
            let estimate: Double? = if let average, usable > 0 { (Double(waiting) / Double(usable)).rounded(.up) * average }
                else { nil }
            return ProcessorSummary(name: try $0.string("name"), waiting: waiting,
                                    dispatched: try $0.int("dispatched"), running: try $0.int("running"),
                                    builders: try $0.int("builders"), idleBuilders: try $0.int("idle"),
                                    usableBuilders: usable, oldestWaitSeconds: $0.optionalDouble("oldest_wait"),
                                    averageBuildSeconds: average, estimatedWaitSeconds: waiting == 0 ? 0 : estimate)
        }
    }

    // MARK: Distributions

    /// Adds DISTRO/SERIES/ARCHTAG built on `processor`, creating the distribution and series as needed.
    public func addArchSeries(distribution: String, series: String, archTag: String, processor: String) async throws {
        try Self.requireName(distribution, "distribution")
        try Self.requireName(series, "series")
        try Self.requireName(archTag, "architecture tag")
        try Self.requireName(processor, "processor")
        try await database.transaction { connection in
            guard let processorRow = try connection.query("SELECT id FROM processor WHERE name = $1", [processor]).first
            else { throw StoreError(.notFound, "unknown processor '\(processor)': add it with `processor add`") }
            try connection.execute("INSERT INTO distribution (name) VALUES ($1) ON CONFLICT DO NOTHING", [distribution])
            try connection.execute("""
                INSERT INTO distroseries (distribution_id, name)
                SELECT id, $2 FROM distribution WHERE name = $1 ON CONFLICT DO NOTHING
                """, [distribution, series])
            let inserted = try connection.execute("""
                INSERT INTO distroarchseries (distroseries_id, architecturetag, processor_id)
                SELECT s.id, $3, $4 FROM distroseries s JOIN distribution d ON d.id = s.distribution_id
                 WHERE d.name = $1 AND s.name = $2
                ON CONFLICT (distroseries_id, architecturetag) DO NOTHING
                """, [distribution, series, archTag, try processorRow.int("id")])
            if inserted == 0 {
                throw StoreError(.alreadyExists, "\(distribution)/\(series)/\(archTag) already exists")
            }
        }
    }

    /// Every arch series with its processor, in the order they were added.
    public func archSeries() async throws -> [DistroArchSeries] {
        try await database.query("""
            SELECT d.name AS distribution, s.name AS series, das.architecturetag, p.name AS processor
              FROM distroarchseries das JOIN distroseries s ON s.id = das.distroseries_id
              JOIN distribution d ON d.id = s.distribution_id JOIN processor p ON p.id = das.processor_id
             ORDER BY das.id
            """).rows.map {
            DistroArchSeries(distribution: try $0.string("distribution"), series: try $0.string("series"),
                             archTag: try $0.string("architecturetag"), processor: try $0.string("processor"))
        }
    }

    // MARK: Builders

    /// Builders that may be given a job (``BuilderAvailability/takesWork``), on `builder b`; `$1` is the
    /// silence limit in seconds.
    static let idleBuilderCondition = BuilderAvailability.sqlCondition(alias: "b", silence: "$1")

    /// An agent that has said nothing for this long is not counted as idle.
    public static let agentSilenceSeconds = BuilderAvailability.silenceSeconds

    public func addBuilder(name: String, processors: [String], url: String? = nil, brokerUser: String? = nil,
                           placement: BuilderPlacement = .plain) async throws {
        try Self.requireName(name, "builder")
        try Self.requireResources(placement)
        guard !processors.isEmpty else { throw StoreError(.invalid, "a builder needs at least one processor") }
        for processor in processors { try Self.requireName(processor, "processor") }
        try await database.transaction { connection in
            try Self.insertBuilder(name: name, processors: processors, url: url, brokerUser: brokerUser,
                                   placement: placement, on: connection)
        }
    }

    /// Inserts a builder and its processors, inside the caller's transaction; returns its id.
    @discardableResult
    static func insertBuilder(name: String, processors: [String], url: String?, brokerUser: String?,
                              placement: BuilderPlacement, on connection: PostgresConnection) throws -> Int {
        let row: PostgresRow?
        do {
            row = try connection.query("""
                INSERT INTO builder (name, kind, url, broker_user, virtualized, open_resources, restricted_resources)
                VALUES ($1, $2, $3, $4, $5, $6::text[], $7::text[]) RETURNING id
                """, [name, url == nil ? "agent" : "xmlrpc", url, brokerUser, placement.virtualized,
                      PostgresArray(placement.openResources.sorted()),
                      PostgresArray(placement.restrictedResources.sorted())]).first
        } catch let error as PostgresError where error.isUniqueViolation {
            throw StoreError(.alreadyExists, "builder '\(name)' already exists")
        } catch let error as PostgresError where error.isCheckViolation {
            throw StoreError(.invalid, "invalid builder: \(error.message)")
        }
        let builderID = try row!.int("id")
        for processor in processors {
            let added = try connection.execute("""
                INSERT INTO builder_processor (builder_id, processor_id) SELECT $1, id FROM processor WHERE name = $2
                """, [builderID, processor])
            if added == 0 {
                throw StoreError(.notFound, "unknown processor '\(processor)': add it with `processor add`")
            }
        }
        return builderID
    }

    /// Changes what a builder offers builds (``Placement``); recorded in its history. A builder whose jobs
    /// move between its shared queues and its control queue needs its agent's `shared_queue` to match.
    public func setBuilderPlacement(_ name: String, _ placement: BuilderPlacement, actor: String?) async throws {
        try Self.requireResources(placement)
        try await database.transaction { connection in
            let changed = try connection.query("""
                UPDATE builder SET virtualized = $2, open_resources = $3::text[], restricted_resources = $4::text[]
                 WHERE name = $1
                """, [name, placement.virtualized, PostgresArray(placement.openResources.sorted()),
                      PostgresArray(placement.restrictedResources.sorted())])
            if changed.affectedRows == 0 { throw StoreError(.notFound, "no builder named '\(name)'") }
            try Self.recordBuilderHistory([BuilderHistoryEntry(builder: name, kind: .placement, actor: actor,
                                                               reason: placement.description)], on: connection)
        }
    }

    static func requireResources(_ placement: BuilderPlacement) throws {
        if let problem = placement.problem { throw StoreError(.invalid, problem) }
    }

    public func builders() async throws -> [BuilderSummary] {
        let rows = try await database.query("""
            SELECT b.name, b.kind, b.url, b.builderok, b.failnotes, b.manual, b.active, b.failure_count,
                   b.agent_state, \(iso("b.last_seen")) AS last_seen,
                   extract(epoch FROM clock_timestamp() - b.last_seen) AS since_seen,
                   (SELECT string_agg(p.name, ',' ORDER BY p.name) FROM builder_processor bp
                      JOIN processor p ON p.id = bp.processor_id WHERE bp.builder_id = b.id) AS processors,
                   q.build_id AS current_build, q.logtail, cb.source_name || ' ' || cb.source_version AS current_title,
                   cb.archive_purpose AS current_archive, b.virtualized, array_to_string(b.open_resources, ',') AS open,
                   array_to_string(b.restricted_resources, ',') AS restricted, b.clean_status, b.reset_method,
                   b.reset_target, b.reset_protocol, b.reset_timeout, b.agent_release,
                   array_to_string(b.agent_capabilities, ',') AS agent_capabilities
              FROM builder b
              LEFT JOIN buildqueue q ON q.builder_id = b.id AND \(QueueRecord.State.sqlHolds("q.state"))
              LEFT JOIN build cb ON cb.id = q.build_id
             ORDER BY b.name
            """)
        return try rows.rows.map { row in
            var summary = BuilderSummary(
                name: try row.string("name"), kind: try row.string("kind"), url: row["url"],
                processors: (row["processors"] ?? "").split(separator: ",").map(String.init),
                builderok: try row.bool("builderok"), failnotes: row["failnotes"], manual: try row.bool("manual"),
                active: try row.bool("active"), failureCount: try row.int("failure_count"),
                agentState: row["agent_state"], lastSeen: row["last_seen"], secondsSinceSeen: row.optionalDouble("since_seen"),
                currentBuild: row.optionalInt64("current_build"), currentTitle: row["current_title"],
                logTail: row["logtail"],
                currentArchive: row["current_archive"].map { ArchivePurpose(rawValue: $0) ?? .private })
            summary.placement = try Self.placement(row)
            summary.cleanStatus = try Self.cleanStatus(row).rawValue
            summary.reset = try Self.resetPlan(row)
            summary.resetMethod = summary.reset?.method.rawValue
            summary.agentRelease = row["agent_release"]
            summary.agentCapabilities = row["agent_capabilities"].map { $0.split(separator: ",").map(String.init) }
            return summary
        }
    }

    // MARK: Builds

    /// Creates a build and queues it with its score; returns its id.
    public func submit(_ request: BuildRequest, actor: String? = nil) async throws -> Int64 {
        try Self.check(request)
        return try await database.transaction { connection in try Self.insertBuild(connection, request, actor: actor) }
    }

    /// The checks a submit's request passes before any SQL runs.
    static func check(_ request: BuildRequest) throws {
        try Self.requireName(request.buildType, "build type")
        for file in request.sourceFiles {
            guard Naming.isValidFileName(file.name), Naming.isValidSHA256(file.sha256), file.size >= 0 else {
                throw StoreError(.invalid, "invalid source file entry '\(file.name)'")
            }
        }
    }

    /// Queues one build inside the caller's transaction: the build, its source files, its queue entry and
    /// the first line of its history. Returns its id.
    static func insertBuild(_ connection: PostgresConnection, _ request: BuildRequest, actor: String? = nil) throws -> Int64 {
        var request = request
        if let name = request.archiveName {
            // A private archive's build is private: its score, its visibility and its virtualized builder.
            let archive = try Self.submittedArchive(name, distribution: request.distribution, on: connection)
            if archive.private { request.archive = .private }
        }
        let score = Scoring.score(urgency: request.urgency, pocket: request.pocket, component: request.component,
                                  archive: request.archive)
        guard let das = try connection.query("""
            SELECT das.id, das.processor_id FROM distroarchseries das
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             WHERE d.name = $1 AND s.name = $2 AND das.architecturetag = $3 AND das.enabled
            """, [request.distribution, request.series, request.archTag]).first
        else {
            throw StoreError(.notFound,
                "unknown arch series \(request.distribution)/\(request.series)/\(request.archTag): "
                + "add it with `archseries add`")
        }
        let requirements = request.requirements
        if let problem = Placement.namesProblem(requirements.constraints, what: "constraint") {
            throw StoreError(.invalid, problem)
        }
        let constraints = PostgresArray(requirements.constraints.sorted())
        let buildID: Int64
        do {
            buildID = try connection.query("""
                INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version, build_type,
                                   urgency, pocket, component, archive_purpose, require_virtualized, constraints,
                                   archive_name, arch_indep)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text[], $12, $13) RETURNING id
                """, [try das.int("id"), try das.int("processor_id"), request.sourceName, request.sourceVersion,
                      request.buildType, request.urgency.rawValue, request.pocket.rawValue,
                      request.component.rawValue, request.archive.rawValue, requirements.virtualized,
                      constraints, request.archiveName, request.archIndep]).first!.int64("id")
        } catch let error as PostgresError where error.isCheckViolation {
            throw StoreError(.invalid, "invalid source name or version: \(request.sourceName) \(request.sourceVersion)")
        }
        for file in request.sourceFiles {
            try connection.execute("INSERT INTO source_file (build_id, name, sha256, size) VALUES ($1, $2, $3, $4)",
                                   [buildID, file.name, file.sha256, file.size])
        }
        try connection.execute("""
            INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore, virtualized, constraints)
            VALUES ($1, $2, $3, $3, $4, $5::text[])
            """, [buildID, try das.int("processor_id"), score, requirements.virtualized, constraints])
        try connection.execute("""
            INSERT INTO build_event (build_id, status, attempt, message, actor) VALUES ($1, $2, 0, $3, $4)
            """, [buildID, BuildStatus.needsBuild.rawValue, "submitted with score \(score)", actor])
        return buildID
    }

    static func recordEvent(_ connection: PostgresConnection, build: Int64, status: BuildStatus, attempt: Int,
                            builder: String?, message: String?) throws {
        try connection.execute("""
            INSERT INTO build_event (build_id, status, attempt, builder, message) VALUES ($1, $2, $3, $4, $5)
            """, [build, status.rawValue, attempt, builder, message])
    }

    static let buildSummaryColumns = """
        b.id, b.status, p.name AS processor, b.archive_purpose, d.name || '/' || s.name || '/' || das.architecturetag AS archseries,
        b.source_name, b.source_version, b.build_type, bl.name AS builder, b.attempt, q.lastscore, q.state AS queue_state,
        b.failure_count, b.result, b.failnotes, \(iso("b.date_created")) AS date_created,
        \(iso("b.date_started")) AS date_started, \(iso("b.date_finished")) AS date_finished
        """

    static let buildSummaryJoins = """
        build b JOIN processor p ON p.id = b.processor_id
        JOIN distroarchseries das ON das.id = b.distroarchseries_id
        JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
        LEFT JOIN builder bl ON bl.id = b.builder_id LEFT JOIN buildqueue q ON q.build_id = b.id
        """

    static func buildSummary(_ row: PostgresRow) throws -> BuildSummary {
        guard let status = BuildStatus(rawValue: try row.string("status")) else {
            throw PostgresError(.decoding, message: "unknown build status")
        }
        return BuildSummary(
            id: try row.int64("id"), status: status, processor: try row.string("processor"),
            archSeries: try row.string("archseries"),
            archive: ArchivePurpose(rawValue: try row.string("archive_purpose")) ?? .private,
            source: try row.string("source_name"),
            version: try row.string("source_version"), buildType: try row.string("build_type"),
            builder: row["builder"], attempt: try row.int("attempt"), score: row.optionalInt64("lastscore").map(Int.init),
            queueState: row["queue_state"], failureCount: try row.int("failure_count"), result: row["result"],
            failnotes: row["failnotes"], dateCreated: try row.string("date_created"), dateStarted: row["date_started"],
            dateFinished: row["date_finished"])
    }

    /// Builds, newest first, optionally only those in `statuses` and of `processor`, of the archives in
    /// `visible` (``Access/visibleArchives(to:)``; all of them for the CLI on a database host).
    public func builds(statuses: [BuildStatus] = [], processor: String? = nil, limit: Int = 100,
                       visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> [BuildSummary] {
        let statusList = statuses.map(\.rawValue).joined(separator: ",")
        return try await database.query("""
            SELECT \(Self.buildSummaryColumns) FROM \(Self.buildSummaryJoins)
             WHERE ($1 = '' OR b.status = ANY(string_to_array($1, ',')))
               AND ($2::text IS NULL OR p.name = $2) AND \(Self.visibleArchiveCondition(parameter: 4))
             ORDER BY b.id DESC LIMIT $3
            """, [statusList, processor, limit, Self.archiveNames(visible)]).rows.map(Self.buildSummary)
    }

    /// The condition that keeps builds (`b`) of the archives bound as parameter `n` (``archiveNames(_:)``).
    static func visibleArchiveCondition(parameter n: Int, alias: String = "b") -> String {
        "\(alias).archive_purpose = ANY($\(n)::text[])"
    }

    static func archiveNames(_ visible: [ArchivePurpose]) -> PostgresArray {
        PostgresArray(visible.map(\.rawValue))
    }

    /// Whether build `id` exists for a caller who sees the archives in `visible`.
    public func buildExists(_ id: Int64, visible: [ArchivePurpose]) async throws -> Bool {
        try await database.query("SELECT 1 FROM build b WHERE b.id = $1 AND \(Self.visibleArchiveCondition(parameter: 2))",
                                 [id, Self.archiveNames(visible)]).first != nil
    }

    /// One build with its files and history; `notFound` also when its archive is not in `visible`.
    public func build(_ id: Int64, visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> BuildDetail {
        var detail = try await database.withConnection { connection in
            guard let row = try connection.query("""
                SELECT \(Self.buildSummaryColumns), b.urgency, b.pocket, b.component, q.logtail, b.log_name,
                       b.require_virtualized, array_to_string(b.constraints, ',') AS constraints, q.state AS queue_state,
                       b.archive_name, b.dependencies
                  FROM \(Self.buildSummaryJoins) WHERE b.id = $1 AND \(Self.visibleArchiveCondition(parameter: 2))
                """, [id, Self.archiveNames(visible)]).first
            else { throw StoreError(.notFound, "no build \(id)") }
            let files = try connection.query("""
                SELECT name, kind, sha256, size, attempt FROM build_file WHERE build_id = $1 ORDER BY attempt, kind, name
                """, [id]).rows.map {
                BuildFile(name: try $0.string("name"), kind: try $0.string("kind"), sha256: try $0.string("sha256"),
                          size: try $0.int64("size"), attempt: try $0.int("attempt"))
            }
            let history = try connection.query("""
                SELECT \(iso("at")) AS at, status, attempt, builder, message, actor FROM build_event
                 WHERE build_id = $1 ORDER BY id
                """, [id]).rows.map {
                BuildEvent(at: try $0.string("at"), status: try $0.string("status"), attempt: try $0.int("attempt"),
                           builder: $0["builder"], message: $0["message"], actor: $0["actor"])
            }
            var detail = BuildDetail(build: try Self.buildSummary(row), urgency: try row.string("urgency"),
                                     pocket: try row.string("pocket"), component: try row.string("component"),
                                     logtail: row["logtail"], logName: row["log_name"], files: files, history: history)
            detail.requirements = BuildRequirements(virtualized: try row.bool("require_virtualized"),
                                                    constraints: Self.resources(row["constraints"]))
            detail.archiveName = row["archive_name"]
            detail.dependencies = row["dependencies"]
            return (detail, waiting: row["queue_state"] == "WAITING")
        }
        if detail.waiting, let requirements = detail.0.requirements {
            let processor = detail.0.build.processor
            detail.0.waitingBecause = Placement.whyWaiting(requirements, processor: processor,
                                                           builders: try await placementCandidates(processor: processor))
        }
        return detail.0
    }

    /// The statement behind ``buildCounts(includingFinished:)``; the live one lists the active statuses from
    /// ``BuildStatus/isActive`` (constants of this binary, no input).
    public static func buildCountsSQL(includingFinished: Bool) -> String {
        if includingFinished { return "SELECT status, count(*) AS n FROM build GROUP BY status" }
        // The active builds are those with a queue entry (a build leaves the queue when it ends).
        return "SELECT b.status, count(*) AS n FROM buildqueue q JOIN build b ON b.id = q.build_id GROUP BY b.status"
    }

    /// Counts of builds by status: by default only the builds still waiting or running (``BuildStatus/isActive``),
    /// read through the queue, so the cost follows the live queue and not the farm's whole history (what
    /// `/v1/status` and `status --watch` ask for every few seconds). `includingFinished` counts every build
    /// ever made: a scan of the whole table, for an operator who asks for it.
    public func buildCounts(includingFinished: Bool = false) async throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try await database.query(Self.buildCountsSQL(includingFinished: includingFinished)).rows {
            counts[try row.string("status")] = try row.int("n")
        }
        return counts
    }
}
