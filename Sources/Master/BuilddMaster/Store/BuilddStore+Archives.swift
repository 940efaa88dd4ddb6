#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import BuilddShared
import Postgres

/// The farm's archives, as a dispatch reads them: each archive with its dependencies, the primary archive
/// of each distribution, and the archives whose builds keep debug symbols.
public struct ArchiveSnapshot: Sendable, Equatable {
    public var archives: [String: ArchiveSource] = [:]
    /// Distribution name -> its primary archive's name.
    public var primaries: [String: String] = [:]
    public var buildDebugSymbols: Set<String> = []

    public init() {}

    /// Whether a build for `archive` (nil: its distribution's primary one) keeps debug symbols.
    public func buildsDebugSymbols(distribution: String, archive: String?) -> Bool {
        (archive ?? primaries[distribution]).map(buildDebugSymbols.contains) ?? false
    }

    /// The apt sources of a build (``ArchiveDependencies/sources(for:primary:archives:)``): nil when its
    /// distribution has no primary archive and it names none (its chroot's own sources are used).
    public func sources(distribution: String, archive: String?, series: String, pocket: Pocket,
                        component: Component) throws -> [AptSource]? {
        guard let primary = primaries[distribution] else {
            if let archive { throw ArchiveDependencyError("archive '\(archive)' needs a primary archive of \(distribution)") }
            return nil
        }
        return try ArchiveDependencies.sources(
            for: .init(archive: archive ?? primary, series: series, pocket: pocket, component: component),
            primary: primary, archives: archives)
    }
}

extension BuilddStore {
    /// How long a dispatch uses the archives it read before reading them again: a change reaches jobs
    /// claimed this long after it, at most.
    static let archiveCacheSeconds = 5

    /// Adds an archive (`archive add`). `distribution` makes it that distribution's primary archive.
    public func addArchive(_ archive: ArchiveSource, distribution: String?, buildDebugSymbols: Bool) async throws {
        if let problem = ArchiveDependencies.problem(archive) { throw StoreError(.invalid, problem) }
        guard (archive.kind == .primary) == (distribution != nil) else {
            throw StoreError(.invalid, "a primary archive names its distribution (--primary DISTRIBUTION); a PPA does not")
        }
        if archive.kind == .primary && archive.isPrivate { throw StoreError(.invalid, "a primary archive is not private") }
        try await database.transaction { connection in
            let id: Int
            do {
                id = try connection.query("""
                    INSERT INTO archive (name, kind, distribution, url, private, signing_key, build_debug_symbols)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
                    """, [archive.name, archive.kind.rawValue, distribution, archive.url, archive.isPrivate,
                          archive.signingKey, buildDebugSymbols]).first!.int("id")
            } catch let error as PostgresError where error.isUniqueViolation {
                throw StoreError(.alreadyExists, distribution.map { "\($0) already has a primary archive" }
                                 ?? "archive '\(archive.name)' already exists")
            }
            for (position, dependency) in archive.dependencies.enumerated() {
                let added = try connection.execute("""
                    INSERT INTO archive_dependency (archive_id, dependency_id, position, pocket, component)
                    SELECT $1, id, $3, $4, $5 FROM archive WHERE name = $2
                    """, [id, dependency.archive, position, dependency.pocket.rawValue, dependency.component?.rawValue])
                if added == 0 { throw StoreError(.notFound, "unknown archive '\(dependency.archive)': add it first") }
            }
        }
        archiveCache.withLock { $0 = nil }
    }

    /// Every archive with its dependencies.
    public func archiveSnapshot(fresh: Bool = false) async throws -> ArchiveSnapshot {
        if !fresh, let cached = archiveCache.withLock({ $0 }),
           ContinuousClock.now - cached.read < .seconds(Self.archiveCacheSeconds) {
            return cached.snapshot
        }
        let rows = try await database.query("""
            SELECT a.name, a.kind, a.distribution, a.url, a.private, a.signing_key, a.build_debug_symbols,
                   (SELECT coalesce(json_agg(json_build_object('archive', d.name, 'pocket', ad.pocket,
                                                               'component', ad.component) ORDER BY ad.position), '[]')
                      FROM archive_dependency ad JOIN archive d ON d.id = ad.dependency_id
                     WHERE ad.archive_id = a.id) AS dependencies
              FROM archive a ORDER BY a.name
            """).rows
        var snapshot = ArchiveSnapshot()
        for row in rows {
            let name = try row.string("name")
            let dependencies = try JSONDecoder().decode([ArchiveDependency].self, from: Data(try row.string("dependencies").utf8))
            let kind = ArchiveSource.Kind(rawValue: try row.string("kind")) ?? .ppa
            snapshot.archives[name] = ArchiveSource(name: name, kind: kind, url: try row.string("url"),
                                                    isPrivate: try row.bool("private"), signingKey: row["signing_key"],
                                                    dependencies: dependencies)
            if kind == .primary, let distribution = row["distribution"] { snapshot.primaries[distribution] = name }
            if try row.bool("build_debug_symbols") { snapshot.buildDebugSymbols.insert(name) }
        }
        let read = snapshot
        archiveCache.withLock { $0 = (ContinuousClock.now, read) }
        return snapshot
    }

    /// Gives each job the apt sources of its build and the archive's build arguments. A job whose sources
    /// cannot be worked out goes without them (it uses the chroot's sources); submit refuses what would
    /// lead there (an unknown archive, one whose distribution has no primary archive), and archives are
    /// never removed.
    func withArchiveSources(_ jobs: [JobMessage]) async throws -> [JobMessage] {
        guard !jobs.isEmpty else { return jobs }
        let snapshot = try await archiveSnapshot()
        guard !snapshot.archives.isEmpty else { return jobs }
        return jobs.map { job in
            var job = job
            guard let pocket = job.pocket.flatMap(Pocket.init(rawValue:)),
                  let component = job.component.flatMap(Component.init(rawValue:)),
                  let sources = try? snapshot.sources(distribution: job.distribution, archive: job.archive,
                                                      series: job.series, pocket: pocket, component: component)
            else { return job }
            job.aptSources = sources.map { JobAptSource(archive: $0.archive, line: $0.legacyLine, key: $0.signingKey) }
            job.buildDebugSymbols = snapshot.buildsDebugSymbols(distribution: job.distribution, archive: job.archive)
            return job
        }
    }

    /// A build's archive checked at submit: it exists, its distribution has a primary archive (every
    /// archive's builds draw on it), and whether it is private (which makes the build private).
    static func submittedArchive(_ name: String, distribution: String,
                                 on connection: PostgresConnection) throws -> (private: Bool, kind: String) {
        guard let row = try connection.query("""
            SELECT private, kind, (kind <> 'primary' OR distribution = $2) AS same,
                   EXISTS (SELECT 1 FROM archive WHERE kind = 'primary' AND distribution = $2) AS has_primary
              FROM archive WHERE name = $1
            """, [name, distribution]).first else {
            throw StoreError(.notFound, "unknown archive '\(name)': add it with `archive add`")
        }
        guard try row.bool("same") else { throw StoreError(.invalid, "archive '\(name)' is not \(distribution)'s") }
        guard try row.bool("has_primary") else {
            throw StoreError(.invalid, "\(distribution) has no primary archive: add one with `archive add NAME --primary \(distribution)`")
        }
        return (try row.bool("private"), try row.string("kind"))
    }
}
