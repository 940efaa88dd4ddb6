import BuilddShared
import Postgres

/// Submits over the HTTP API, made safe to retry, and the build list read page by page.
extension BuilddStore {
    /// A submit's `Idempotency-Key`, scoped to the caller that sent it (two clients never share a key), with
    /// the digest of the request it came with.
    public struct SubmitKey: Sendable, Equatable {
        public let caller: String
        public let key: String
        public let requestSHA256: String

        public init(caller: String, key: String, requestSHA256: String) {
            self.caller = caller
            self.key = key
            self.requestSHA256 = requestSHA256
        }
    }

    /// What a submit with a key did.
    public enum KeyedSubmit: Equatable, Sendable {
        /// A new build.
        case created(Int64)
        /// The key was seen before with the same request: the build that first submit made.
        case replayed(Int64)
        /// The key was seen before with another request: nothing done.
        case keyReused(Int64)
    }

    /// How long a submit's key is remembered.
    public static let submitKeyHours = 24

    /// Queues a build unless a submit with the same key was already committed (by this master or another):
    /// then it answers with that submit's build. Two submits with one key at once make one build: the second
    /// waits on the first's key row and, once that commits, rolls its own build back.
    public func submit(_ request: BuildRequest, key: SubmitKey, actor: String?) async throws -> KeyedSubmit {
        try Self.check(request)
        struct LostTheRace: Error {}
        do {
            return try await database.transaction { connection in
                if let earlier = try Self.keyedBuild(connection, key) { return earlier }
                let id = try Self.insertBuild(connection, request, actor: actor)
                let kept = try connection.query("""
                    INSERT INTO submit_key (caller, key, request_sha256, build_id) VALUES ($1, $2, $3, $4)
                    ON CONFLICT (caller, key) DO NOTHING RETURNING build_id
                    """, [key.caller, key.key, key.requestSHA256, id])
                // Another submit with this key committed while this one ran: this build is rolled back.
                guard kept.first != nil else { throw LostTheRace() }
                // Keys older than their time go, a few at a time, with the submits that come.
                try connection.execute("""
                    DELETE FROM submit_key WHERE ctid = ANY(ARRAY(
                        SELECT ctid FROM submit_key WHERE created_at < now() - make_interval(hours => $1) LIMIT 10))
                    """, [Self.submitKeyHours])
                return .created(id)
            }
        } catch is LostTheRace {
            return try await database.withConnection { connection in
                guard let earlier = try Self.keyedBuild(connection, key) else {
                    throw StoreError(.conflict, "a submit with this Idempotency-Key was being made at the same time: try again")
                }
                return earlier
            }
        }
    }

    /// The build an earlier submit with `key` made, if one committed (younger than ``submitKeyHours``).
    static func keyedBuild(_ connection: PostgresConnection, _ key: SubmitKey) throws -> KeyedSubmit? {
        guard let row = try connection.query("""
            SELECT request_sha256, build_id FROM submit_key
             WHERE caller = $1 AND key = $2 AND created_at >= now() - make_interval(hours => $3)
            """, [key.caller, key.key, Self.submitKeyHours]).first else { return nil }
        let id = try row.int64("build_id")
        return try row.string("request_sha256") == key.requestSHA256 ? .replayed(id) : .keyReused(id)
    }

    /// Which builds a page lists.
    public struct BuildFilter: Sendable, Equatable {
        public var statuses: [BuildStatus] = []
        public var processor: String?
        public var source: String?
        public var builder: String?
        public var archive: ArchivePurpose?
        /// Builds created at or after this time (ISO 8601, or anything PostgreSQL reads as a timestamptz).
        public var since: String?
        /// Builds created before this time.
        public var until: String?
        /// The ids of `processor` and `builder`, looked up before the page is read (-1: no such name). The page's
        /// statement then compares ids the planner knows, and picks the builder's own index for a builder with few
        /// builds: with a subquery in their place it walked the whole primary key for a builder that had none.
        var processorID: Int?
        var builderID: Int?

        public init(statuses: [BuildStatus] = [], processor: String? = nil, source: String? = nil, builder: String? = nil,
                    archive: ArchivePurpose? = nil, since: String? = nil, until: String? = nil) {
            self.statuses = statuses
            self.processor = processor
            self.source = source
            self.builder = builder
            self.archive = archive
            self.since = since
            self.until = until
        }

        /// The column a page is ordered by before the id, when one filter fixes it: the page then walks that
        /// filter's own index (`build_by_builder`, `build_by_source`, `build_by_status`) from the newest of its
        /// builds, and ends at once when it has none, instead of reading the primary key past every other build.
        var leadingColumn: String? {
            if builder != nil { return "b.builder_id" }
            if source != nil { return "b.source_name" }
            if statuses.count == 1 { return "b.status" }
            return nil
        }

        /// The WHERE conditions of the filters that are set, with their parameters from `$first` on. Only the
        /// filters in use are in the statement, so PostgreSQL plans each shape for what it asks (a status or a
        /// source walks its own index in id order) instead of one generic plan for all of them.
        func conditions(from first: Int) -> (sql: [String], parameters: [(any PostgresBindable)?]) {
            var sql: [String] = []
            var parameters: [(any PostgresBindable)?] = []
            func add(_ condition: (Int) -> String, _ value: any PostgresBindable) {
                parameters.append(value)
                sql.append(condition(first + parameters.count - 1))
            }
            if statuses.count == 1 { add({ "b.status = $\($0)" }, statuses[0].rawValue) }
            if statuses.count > 1 { add({ "b.status = ANY($\($0)::text[])" }, PostgresArray(statuses.map(\.rawValue))) }
            if let processor { add({ "b.processor_id = $\($0)" }, processorID ?? -1) }
            if let source { add({ "b.source_name = $\($0)" }, source) }
            if builder != nil { add({ "b.builder_id = $\($0)" }, builderID ?? -1) }
            if let archive { add({ "b.archive_purpose = $\($0)" }, archive.rawValue) }
            // A time bound also bounds the ids, so a page walks the primary key from the bound instead of reading
            // every build beyond it (an `until` a month back read 970,000 builds: 190 ms). The farm gives ids in
            // creation order: a build's id comes from a sequence when its row is written, its `date_created` is its
            // submit's start, and a submit is one short transaction. The id bound is taken five minutes beyond
            // the time bound, so a build whose submit was in flight across the bound is still inside unless the
            // submit took five minutes, which the masters' session timeouts do not allow.
            if let since {
                add({ "b.date_created >= $\($0)::timestamptz" }, since)
                sql.append("b.id > coalesce((SELECT id FROM build WHERE date_created < $\(first + parameters.count - 1)::timestamptz - interval '5 minutes' ORDER BY date_created DESC, id DESC LIMIT 1), 0)")
            }
            if let until {
                add({ "b.date_created < $\($0)::timestamptz" }, until)
                sql.append("b.id < coalesce((SELECT id FROM build WHERE date_created >= $\(first + parameters.count - 1)::timestamptz + interval '5 minutes' ORDER BY date_created, id LIMIT 1), 9223372036854775807)")
            }
            return (sql, parameters)
        }
    }

    /// Tables whose rows a page's filter names.
    enum NamedTable: String { case builder, processor }

    /// The id of the row of `table` named `name`, or -1 when there is none (a filter that matches nothing).
    func id(of table: NamedTable, named name: String) async throws -> Int {
        try await database.query("SELECT id FROM \(table.rawValue) WHERE name = $1", [name]).first.map { try $0.int("id") } ?? -1
    }

    /// The order of a page, and where it starts: newest first below `before`, or oldest first above `after`.
    public enum PageStart: Sendable, Equatable {
        case newest(before: Int64?)
        case oldest(after: Int64?)
    }

    /// One page of builds; `next` is where the following page starts (nil: this was the last).
    public struct BuildPage: Sendable {
        public let builds: [BuildSummary]
        public let next: PageStart?
    }

    /// A page of builds by id, newest or oldest first, of the archives in `visible`. Paging by id (a keyset)
    /// sees each build once however many arrive meanwhile: newest first, new builds land before the first
    /// page; oldest first, after the last one, where a client that picks up from its cursor finds them.
    public func buildPage(_ filter: BuildFilter, start: PageStart, limit: Int,
                          visible: [ArchivePurpose] = ArchivePurpose.allCases) async throws -> BuildPage {
        let (boundCondition, order, bound): (String, String, Int64?)
        switch start {
        case .newest(let before): (boundCondition, order, bound) = ("($3::bigint IS NULL OR b.id < $3)", "DESC", before)
        case .oldest(let after): (boundCondition, order, bound) = ("($3::bigint IS NULL OR b.id > $3)", "ASC", after)
        }
        var filter = filter
        if let name = filter.processor { filter.processorID = try await id(of: .processor, named: name) }
        if let name = filter.builder { filter.builderID = try await id(of: .builder, named: name) }
        let (conditions, parameters) = filter.conditions(from: 4)
        let rows = try await database.query("""
            SELECT \(Self.buildSummaryColumns) FROM \(Self.buildSummaryJoins)
             WHERE \(Self.visibleArchiveCondition(parameter: 1)) AND \(boundCondition)
             \(conditions.map { "AND " + $0 }.joined(separator: " "))
             ORDER BY \(filter.leadingColumn.map { "\($0) \(order), " } ?? "")b.id \(order) LIMIT $2
            """, [Self.archiveNames(visible), limit + 1, bound] + parameters, prepare: false).rows.map(Self.buildSummary)
        let page = Array(rows.prefix(limit))
        guard rows.count > limit, let last = page.last else { return BuildPage(builds: page, next: nil) }
        switch start {
        case .newest: return BuildPage(builds: page, next: .newest(before: last.id))
        case .oldest: return BuildPage(builds: page, next: .oldest(after: last.id))
        }
    }
}
