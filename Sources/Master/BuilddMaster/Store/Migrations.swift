#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import BuilddShared
import Postgres

/// One versioned schema change from `deploy/migrations/NNNN_name.sql`.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String

    /// The oldest schema version whose masters can still serve a database this migration was applied to:
    /// the `-- servable-from: N` line of its file. An expand-only change (a new nullable column or table the
    /// older masters ignore) names the version before it, so masters of the previous release keep running
    /// beside the new ones; a change they cannot serve (a contraction, a new CHECK they may violate) names
    /// its own version, the default.
    public var servableFrom: Int {
        for line in sql.split(separator: "\n", omittingEmptySubsequences: true).prefix(40) {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("-- servable-from:"),
               let value = Int(text.dropFirst("-- servable-from:".count).trimmingCharacters(in: .whitespaces)),
               value > 0, value <= version {
                return value
            }
        }
        return version
    }
}

/// Applies the schema migrations this binary carries.
public enum Migrations {
    /// Every migration, oldest first.
    public static var all: [Migration] { embedded.sorted { $0.version < $1.version } }

    /// The schema version this binary expects.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    /// The first schema version that records, per migration, which masters can serve it (`servable_from`)
    /// and the release that applied it.
    static let compatibilityVersion = 16

    public struct SchemaTooNewError: Error, CustomStringConvertible {
        public let databaseVersion: Int
        public let binaryVersion: Int
        /// The oldest schema version whose masters serve this database, and the release that brought it
        /// (nil: a database from before releases were recorded).
        public var servableFrom: Int? = nil
        public var servableRelease: String? = nil
        public var description: String {
            var text = "the database schema is at version \(databaseVersion), newer than this buildd-master "
                + "\(BuilddRelease.version) knows (\(binaryVersion))"
            if let servableFrom {
                text += "; it is served by masters of schema \(servableFrom) and later"
                if let servableRelease { text += " (buildd \(servableRelease) and later)" }
            }
            return text + ": upgrade buildd-master instead of migrating"
        }
    }

    /// How this binary stands to a database's schema.
    public enum Standing: Equatable, Sendable {
        /// Exactly this binary's schema.
        case current
        /// A newer schema whose changes since this binary's are all expand-only: served as it is.
        case newerServable(database: Int)
    }

    public struct SchemaOutdatedError: Error, CustomStringConvertible {
        public let databaseVersion: Int
        public let binaryVersion: Int
        public var description: String {
            "the database schema is at version \(databaseVersion), this buildd-master needs \(binaryVersion): "
                + "run `buildd-master migrate`"
        }
    }

    /// Brings the schema up to date (or up to `target`, for tests that start from an older schema).
    /// Idempotent; safe to run from several hosts at once (advisory lock).
    /// - Returns: the versions applied by this call.
    @discardableResult
    public static func migrate(_ connection: PostgresConnection, through target: Int? = nil,
                               progress: (Migration) -> Void = { _ in }) throws -> [Int] {
        try connection.execute("SET client_min_messages = warning")
        try connection.execute("""
            CREATE TABLE IF NOT EXISTS schema_version (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now())
            """)
        var applied: [Int] = []
        try connection.transaction { connection in
            // A migration may wait for another host's migration and for its tables' locks (a master's session
            // sets a lock_timeout of a third of its lease).
            try connection.execute("SET LOCAL lock_timeout = 0")
            try connection.execute("SELECT pg_advisory_xact_lock(727274)")
            let current = try currentVersion(connection)
            // A newer schema this binary can serve is left as it is (the unit's `migrate` before `serve`
            // must pass on a farm that a newer release already migrated); any other is refused.
            guard current <= latestVersion else {
                _ = try standing(connection)
                return
            }
            for migration in all where migration.version > current && migration.version <= (target ?? latestVersion) {
                progress(migration)
                try connection.executeScript(migration.sql)
                if migration.version >= compatibilityVersion {
                    try connection.execute("""
                        INSERT INTO schema_version (version, name, servable_from, release) VALUES ($1, $2, $3, $4)
                        """, [migration.version, migration.name, migration.servableFrom, BuilddRelease.version])
                } else {
                    try connection.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                                           [migration.version, migration.name])
                }
                applied.append(migration.version)
            }
        }
        return applied
    }

    /// The version recorded in the database (0 for an empty database).
    public static func currentVersion(_ connection: PostgresConnection) throws -> Int {
        let exists = try connection.query("SELECT to_regclass('schema_version') IS NOT NULL AS present")
        guard try exists.first?.bool("present") == true else { return 0 }
        return try connection.query("SELECT coalesce(max(version), 0) AS version FROM schema_version")
            .first?.int("version") ?? 0
    }

    /// Throws unless this binary can serve the database: its own schema, or a newer one whose every change
    /// since this binary's version is servable from it (``Migration/servableFrom``, recorded per version).
    /// The error names the schema and release masters need.
    @discardableResult
    public static func requireCurrent(_ connection: PostgresConnection) throws -> Standing {
        try standing(connection)
    }

    public static func standing(_ connection: PostgresConnection) throws -> Standing {
        let current = try currentVersion(connection)
        if current < latestVersion { throw SchemaOutdatedError(databaseVersion: current, binaryVersion: latestVersion) }
        if current == latestVersion { return .current }
        let rows = try connection.query("""
            SELECT version, coalesce(servable_from, version) AS servable_from, release
              FROM schema_version WHERE version > $1 ORDER BY version
            """, [latestVersion]).rows
        let needed = try rows.map { try $0.int("servable_from") }.max() ?? current
        do {
            return try verdict(binary: latestVersion, database: current, servableFrom: needed)
        } catch var error as SchemaTooNewError {
            error.servableRelease = try rows.first { try $0.int("version") == needed }?["release"]
            throw error
        }
    }

    /// The rule itself: a binary of schema `binary` serves a database at `database` whose changes since
    /// `binary` need masters of `servableFrom` or later (the largest `servable_from` among them).
    public static func verdict(binary: Int, database: Int, servableFrom: Int) throws -> Standing {
        if database < binary { throw SchemaOutdatedError(databaseVersion: database, binaryVersion: binary) }
        if database == binary { return .current }
        guard servableFrom <= binary else {
            throw SchemaTooNewError(databaseVersion: database, binaryVersion: binary, servableFrom: servableFrom)
        }
        return .newerServable(database: database)
    }
}
