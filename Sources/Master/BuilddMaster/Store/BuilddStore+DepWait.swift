import BuilddShared
import Postgres

/// A MANUALDEPWAIT build whose builder named what is missing (``DepWait``), with what its sources depend on.
public struct DepWaitingBuild: Sendable, Equatable {
    public var id: Int64
    public var dependencies: String
    public var architecture: String
    public var distribution: String
    public var series: String
    public var pocket: Pocket
    public var component: Component
    public var archive: String?
}

extension BuilddStore {
    /// The dependency waits the dep-wait pass may retry: MANUALDEPWAIT builds with a missing relation, oldest
    /// first (at most `limit`).
    public func depWaitingBuilds(limit: Int = 1000) async throws -> [DepWaitingBuild] {
        try await database.query("""
            SELECT b.id, b.dependencies, das.architecturetag, d.name AS distribution, s.name AS series, b.pocket,
                   b.component, b.archive_name
              FROM build b JOIN distroarchseries das ON das.id = b.distroarchseries_id
              JOIN distroseries s ON s.id = das.distroseries_id JOIN distribution d ON d.id = s.distribution_id
             WHERE b.status = 'MANUALDEPWAIT' AND b.dependencies IS NOT NULL
             ORDER BY b.id LIMIT $1
            """, [limit]).rows.map { row in
            DepWaitingBuild(id: try row.int64("id"), dependencies: try row.string("dependencies"),
                            architecture: try row.string("architecturetag"), distribution: try row.string("distribution"),
                            series: try row.string("series"), pocket: Pocket(rawValue: try row.string("pocket")) ?? .release,
                            component: Component(rawValue: try row.string("component")) ?? .main,
                            archive: row["archive_name"])
        }
    }

    /// The relation a build waits for, when it is a dependency wait whose builder named it.
    public func dependencies(of buildID: Int64) async throws -> String? {
        try await database.query("SELECT dependencies FROM build WHERE id = $1", [buildID]).first?["dependencies"]
    }
}
