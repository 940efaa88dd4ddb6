import BuilddShared
import Postgres

/// A legacy builder as its adapter sees it at the start of a tick.
public struct LegacyBuilderSnapshot: Sendable, Equatable {
    public struct CurrentBuild: Sendable, Equatable {
        public var buildID: Int64
        public var attempt: Int32
        public var buildType: String
        /// RUNNING or CANCELLING.
        public var cancelling: Bool
        /// Seconds since the builder accepted it.
        public var runningSeconds: Double
        /// launchpad-buildd's name for it, `<TYPE>-<id>`.
        public var cookie: String { LegacyCookie.make(buildType: buildType, buildID: buildID) }
        /// What the core's ``LegacyPolicy`` needs of it.
        public var expectation: LegacyExpectation { LegacyExpectation(cookie: cookie, cancelling: cancelling) }
    }

    public var id: Int
    public var name: String
    public var url: String
    public var builderok: Bool
    public var manual: Bool
    public var processors: [String]
    /// Architecture tags of the arch series its processors build (what `info()` may answer).
    public var archTags: [String]
    public var current: CurrentBuild?
    /// Faults counted against it while it held no build, not yet forgiven (``BuilderStanding/idleFaults``).
    public var idleFaults = 0
    /// Whether it takes its processors' shared job queues; if not, its jobs are addressed to it, on its
    /// control queue (``BuilderPlacement/takesSharedQueue(reset:)``).
    public var takesSharedQueue = true
}

/// Launchpad's build cookie: `PACKAGEBUILD-<id>` for binary packages, `<TYPE>-<id>` otherwise.
public enum LegacyCookie {
    public static func make(buildType: String, buildID: Int64) -> String {
        let type = buildType == "binarypackage" ? "PACKAGEBUILD" : buildType.uppercased()
        return "\(type)-\(buildID)"
    }
}

/// What a legacy builder needs for one build: the arguments of `build()` and the files to make present.
public struct LegacyDispatchDetails: Sendable {
    public struct File: Sendable, Equatable {
        public var name: String
        public var sha256: String
        public var sha1: String?
        public var size: Int64
    }

    public var buildType: String
    public var distribution: String
    public var series: String
    public var archTag: String
    public var pocket: String
    public var component: String
    public var archivePurpose: String
    public var chroot: File?
    public var sources: [File]
    /// The apt sources of the build (``ArchiveDependencies``), as launchpad-buildd's `archives` takes them.
    public var archives: [String] = []
    public var archIndep = false
    public var buildDebugSymbols = false
}

extension BuilddStore {
    /// Says this master is alive for `leaseSeconds` and returns the masters alive now, itself included.
    public func liveMasters(announcing master: String, leaseSeconds: Int) async throws -> [String] {
        try await database.query("""
            WITH me AS (
                INSERT INTO master_presence (name, alive_until) VALUES ($1, now() + make_interval(secs => $2))
                ON CONFLICT (name) DO UPDATE SET alive_until = EXCLUDED.alive_until RETURNING name)
            SELECT name FROM master_presence WHERE alive_until > now() AND name <> $1 UNION SELECT name FROM me
            """, [master, leaseSeconds]).rows.map { try $0.string("name") }.sorted()
    }

    /// Takes (or keeps) the legacy builders this master follows, and renews its lease on them: its share
    /// among the masters alive now (``LegacyShare``), each taken once it is unowned or its owner's lease
    /// ran out. Builders it holds that are now another live master's are let go at once, so the master
    /// that joined takes them at its next tick. Returns what each of its builders looks like now.
    public func claimLegacyBuilders(master: String, leaseSeconds: Int) async throws -> [LegacyBuilderSnapshot] {
        let live = try await liveMasters(announcing: master, leaseSeconds: leaseSeconds)
        let names = try await database.query("""
            SELECT name FROM builder WHERE kind = 'xmlrpc' AND active ORDER BY name
            """).rows.map { try $0.string("name") }
        let mine = PostgresArray(LegacyShare.share(of: master, builders: names, among: live))
        try await database.query("""
            UPDATE builder SET legacy_master = NULL, legacy_lease_until = NULL
             WHERE kind = 'xmlrpc' AND legacy_master = $1 AND NOT (name = ANY ($2::text[]))
            """, [master, mine])
        let rows = try await database.query("""
            WITH owned AS (
                UPDATE builder SET legacy_master = $1, legacy_lease_until = now() + make_interval(secs => $2)
                 WHERE kind = 'xmlrpc' AND active AND name = ANY ($3::text[])
                   AND (legacy_master = $1 OR legacy_master IS NULL OR legacy_lease_until < now())
                RETURNING id, name, url, builderok, manual, idle_faults,
                          \(Placement.sqlTakesSharedQueue(builder: "builder")) AS shared
            )
            SELECT o.id, o.name, o.url, o.builderok, o.manual, o.shared, o.idle_faults,
                   (SELECT string_agg(p.name, ',' ORDER BY p.name) FROM builder_processor bp
                      JOIN processor p ON p.id = bp.processor_id WHERE bp.builder_id = o.id) AS processors,
                   (SELECT string_agg(DISTINCT das.architecturetag, ',') FROM builder_processor bp
                      JOIN distroarchseries das ON das.processor_id = bp.processor_id WHERE bp.builder_id = o.id) AS tags,
                   q.build_id, q.state, b.attempt, b.build_type,
                   extract(epoch FROM now() - coalesce(b.date_started, now())) AS running_for
              FROM owned o
              LEFT JOIN buildqueue q ON q.builder_id = o.id AND \(QueueRecord.State.sqlHolds("q.state"))
              LEFT JOIN build b ON b.id = q.build_id
             ORDER BY o.id
            """, [master, leaseSeconds, mine])
        return try rows.rows.map { row in
            var current: LegacyBuilderSnapshot.CurrentBuild?
            if let buildID = row.optionalInt64("build_id") {
                current = .init(buildID: buildID, attempt: Int32(try row.int("attempt")),
                                buildType: try row.string("build_type"), cancelling: try row.string("state") == "CANCELLING",
                                runningSeconds: row.optionalDouble("running_for") ?? 0)
            }
            var snapshot = LegacyBuilderSnapshot(
                id: try row.int("id"), name: try row.string("name"), url: try row.string("url"),
                builderok: try row.bool("builderok"), manual: try row.bool("manual"),
                processors: (row["processors"] ?? "").split(separator: ",").map(String.init),
                archTags: (row["tags"] ?? "").split(separator: ",").map(String.init), current: current)
            snapshot.takesSharedQueue = try row.bool("shared")
            snapshot.idleFaults = try row.int("idle_faults")
            return snapshot
        }
    }

    /// Gives up this master's legacy builders (a clean shutdown), so another master takes them at once.
    public func releaseLegacyBuilders(master: String) async throws {
        try await database.transaction { connection in
            try connection.execute("DELETE FROM master_presence WHERE name = $1", [master])
            try connection.execute("""
                UPDATE builder SET legacy_master = NULL, legacy_lease_until = NULL WHERE legacy_master = $1
                """, [master])
        }
    }

    /// Records what the last polls saw (IDLE, BUILDING, ABORTING), so the dispatch window and `builder list`
    /// count legacy builders like agents: ``LifecycleCore/observedLegacy(_:)`` on the builders' rows, read and
    /// locked as an event batch's, written in one statement. Returns the builders noted.
    @discardableResult
    public func recordLegacyStates(_ states: [(builderID: Int, state: AgentState)]) async throws -> [Int] {
        guard !states.isEmpty else { return [] }
        return try await database.transaction { connection in
            var core = try Self.loadCore(builderNames: [], builderIDs: states.map(\.builderID), buildIDs: [], filesOf: [],
                                         leaseSeconds: 0, on: connection)
            let noted = core.observedLegacy(states.map { ($0.builderID, $0.state) })
            try Self.write(core, on: connection)
            return noted
        }
    }

    /// Counts a fault of a legacy builder that held no build (Launchpad's threshold disables it) and
    /// shows the reason in its failnotes. Returns whether the builder is now failed.
    /// The ledger's ``BuilderStanding/countIdleFault(_:)``, stored whole with the builder.
    @discardableResult
    public func countLegacyBuilderFault(builderID: Int, reason: String) async throws -> Bool {
        try await updateStanding(id: builderID) { $0.countIdleFault(reason) }
    }

    /// Shows the reason of a legacy builder's last fault without counting it again (the build's
    /// failure counting already did).
    public func noteLegacyFault(builderID: Int, reason: String) async throws {
        try await updateStanding(id: builderID) { $0.notes = reason }
    }

    /// A legacy builder that answered well after faults: the ledger's ``BuilderStanding/forgiveIdleFaults()``
    /// on its stored standing (whoever counted the faults, this master before a restart or another before a
    /// takeover).
    public func forgiveLegacyFaults(builderID: Int) async throws {
        try await updateStanding(id: builderID) { $0.forgiveIdleFaults() }
    }

    /// Everything `build()` needs for one build.
    public func legacyDispatchDetails(buildID: Int64) async throws -> LegacyDispatchDetails? {
        let row = try await database.query("""
            SELECT b.build_type, b.pocket, b.component, b.archive_purpose, b.archive_name, b.arch_indep,
                   d.name AS distribution, s.name AS series,
                   das.architecturetag, das.chroot_name, das.chroot_sha256, das.chroot_sha1, das.chroot_size
              FROM build b JOIN distroarchseries das ON das.id = b.distroarchseries_id
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             WHERE b.id = $1
            """, [buildID]).first
        guard let row else { return nil }
        let sources = try await database.query(
            "SELECT name, sha256, sha1, size FROM source_file WHERE build_id = $1 ORDER BY name", [buildID]).rows.map {
            LegacyDispatchDetails.File(name: try $0.string("name"), sha256: try $0.string("sha256"), sha1: $0["sha1"],
                                       size: try $0.int64("size"))
        }
        var chroot: LegacyDispatchDetails.File?
        if let sha256 = row["chroot_sha256"] {
            chroot = .init(name: row["chroot_name"] ?? "chroot.tar.gz", sha256: sha256, sha1: row["chroot_sha1"],
                           size: row.optionalInt64("chroot_size") ?? 0)
        }
        var details = LegacyDispatchDetails(
            buildType: try row.string("build_type"), distribution: try row.string("distribution"),
            series: try row.string("series"), archTag: try row.string("architecturetag"),
            pocket: try row.string("pocket"), component: try row.string("component"),
            archivePurpose: try row.string("archive_purpose"), chroot: chroot, sources: sources)
        details.archIndep = try row.bool("arch_indep")
        let snapshot = try await archiveSnapshot()
        if let pocket = Pocket(rawValue: details.pocket), let component = Component(rawValue: details.component),
           let lines = try snapshot.sources(distribution: details.distribution, archive: row["archive_name"],
                                            series: details.series, pocket: pocket, component: component) {
            details.archives = lines.map(\.legacyLine)
        }
        details.buildDebugSymbols = snapshot.buildsDebugSymbols(distribution: details.distribution, archive: row["archive_name"])
        return details
    }

    /// The name a build's log is stored under: `buildlog_DISTRO-SERIES-ARCH.SOURCE_VERSION.txt`, as agents name it.
    public func logName(buildID: Int64) async throws -> String {
        guard let row = try await database.query("""
            SELECT d.name || '-' || s.name || '-' || das.architecturetag || '.' || b.source_name || '_' || b.source_version
                   AS stem
              FROM build b JOIN distroarchseries das ON das.id = b.distroarchseries_id
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             WHERE b.id = $1
            """, [buildID]).first else { throw StoreError(.notFound, "no build \(buildID)") }
        return "buildlog_\(try row.string("stem")).txt"
    }

    /// Remembers a source file's SHA-1 (computed once, when a legacy builder first needs it).
    public func setSourceSHA1(buildID: Int64, name: String, sha1: String) async throws {
        try await database.query("UPDATE source_file SET sha1 = $3 WHERE build_id = $1 AND name = $2",
                                 [buildID, name, sha1])
    }

    /// Sets the chroot legacy builders of DISTRO/SERIES/ARCHTAG build in.
    public func setChroot(distribution: String, series: String, archTag: String, name: String, sha256: String,
                          sha1: String, size: Int64) async throws {
        let changed = try await database.query("""
            UPDATE distroarchseries das SET chroot_name = $4, chroot_sha256 = $5, chroot_sha1 = $6, chroot_size = $7
              FROM distroseries s, distribution d
             WHERE s.id = das.distroseries_id AND d.id = s.distribution_id
               AND d.name = $1 AND s.name = $2 AND das.architecturetag = $3
            """, [distribution, series, archTag, name, sha256, sha1, size])
        if changed.affectedRows == 0 {
            throw StoreError(.notFound, "no arch series \(distribution)/\(series)/\(archTag)")
        }
    }

    /// A chroot by its SHA-1 (what a legacy builder's `ensurepresent` asks for) or its SHA-256 (what a
    /// job names for agents), lower-case hex.
    public func chroot(digest: String) async throws -> FileDigest? {
        let column = digest.count == 64 ? "chroot_sha256" : "chroot_sha1"
        return try await database.query("""
            SELECT chroot_name, chroot_sha256, chroot_size FROM distroarchseries WHERE \(column) = $1 LIMIT 1
            """, [digest]).first.map {
            FileDigest(name: try $0.string("chroot_name"), sha256: try $0.string("chroot_sha256"),
                       size: try $0.int64("chroot_size"))
        }
    }
}
