import Postgres

/// One versioned schema change from `deploy/migrations/NNNN_name.sql`.
public struct Migration: Sendable {
    public let version: Int
    public let name: String
    public let sql: String
}

/// Applies the schema migrations this binary carries.
public enum Migrations {
    /// Every migration, oldest first.
    public static var all: [Migration] { embedded.sorted { $0.version < $1.version } }

    /// The schema version this binary expects.
    public static var latestVersion: Int { all.last?.version ?? 0 }

    public struct SchemaTooNewError: Error, CustomStringConvertible {
        public let databaseVersion: Int
        public let binaryVersion: Int
        public var description: String {
            "the database schema is at version \(databaseVersion), newer than this buildd-master knows "
                + "(\(binaryVersion)); upgrade buildd-master instead of migrating"
        }
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
            guard current <= latestVersion else {
                throw SchemaTooNewError(databaseVersion: current, binaryVersion: latestVersion)
            }
            for migration in all where migration.version > current && migration.version <= (target ?? latestVersion) {
                progress(migration)
                try connection.executeScript(migration.sql)
                try connection.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                                       [migration.version, migration.name])
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

    /// Throws unless the database is exactly at this binary's version.
    public static func requireCurrent(_ connection: PostgresConnection) throws {
        let current = try currentVersion(connection)
        if current > latestVersion { throw SchemaTooNewError(databaseVersion: current, binaryVersion: latestVersion) }
        if current < latestVersion { throw SchemaOutdatedError(databaseVersion: current, binaryVersion: latestVersion) }
    }
}
