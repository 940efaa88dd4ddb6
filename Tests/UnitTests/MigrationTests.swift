@testable import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

@Suite(.timeLimit(.minutes(1))) struct MigrationTests {
    /// "Holds a build" has one definition (``QueueRecord/State/holdsBuilder``); its SQL is generated from it, and
    /// the schema's partial indexes on held entries use exactly that predicate, so queries that state it use them.
    @Test func holdingABuilderHasOneDefinitionWhichTheSchemasIndexesUse() {
        #expect(QueueRecord.State.allCases.filter(\.holdsBuilder) == [.running, .cancelling])
        let predicate = QueueRecord.State.sqlHolds("state")
        #expect(predicate == "state IN ('RUNNING', 'CANCELLING')")
        let schema = Migrations.embedded.map(\.sql).joined(separator: "\n")
        #expect(schema.components(separatedBy: "WHERE " + predicate).count - 1 >= 2, "the lease and holder indexes")
    }

    /// The binary's embedded schema is the one in deploy/migrations (run deploy/embed-migrations after editing).
    @Test func embeddedMigrationsMatchDeployFolder() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let folder = root.appendingPathComponent("deploy/migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".sql") }.sorted()
        #expect(files.count == Migrations.all.count)
        for (file, migration) in zip(files, Migrations.all) {
            #expect(file == migration.name + ".sql")
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            #expect(text.trimmingCharacters(in: .newlines) == migration.sql.trimmingCharacters(in: .newlines),
                    "\(file) differs from the embedded copy: run deploy/embed-migrations")
        }
        #expect(Migrations.latestVersion == Migrations.all.count)
    }

    /// Expand and contract: a migration names the oldest schema whose masters serve it; a master serves its own
    /// schema and a newer one whose every change since is servable from its own, and refuses the rest naming
    /// the schema that serves it.
    @Test func aMasterServesANewerSchemaOnlyWhenEveryChangeSinceIsServableFromItsOwn() throws {
        #expect(Migration(version: 17, name: "x", sql: "-- about\n-- servable-from: 16\nALTER TABLE t ADD c int;").servableFrom == 16)
        #expect(Migration(version: 17, name: "x", sql: "ALTER TABLE t DROP c;").servableFrom == 17)
        // A line that names a later schema than its own, or garbage, is the default.
        #expect(Migration(version: 17, name: "x", sql: "-- servable-from: 18\n").servableFrom == 17)
        #expect(Migration(version: 17, name: "x", sql: "-- servable-from: soon\n").servableFrom == 17)
        #expect(try Migrations.verdict(binary: 16, database: 16, servableFrom: 16) == .current)
        #expect(try Migrations.verdict(binary: 16, database: 18, servableFrom: 16) == .newerServable(database: 18))
        #expect(throws: Migrations.SchemaTooNewError.self) {
            try Migrations.verdict(binary: 16, database: 18, servableFrom: 17)
        }
        #expect(throws: Migrations.SchemaOutdatedError.self) {
            try Migrations.verdict(binary: 16, database: 15, servableFrom: 15)
        }
        let error = Migrations.SchemaTooNewError(databaseVersion: 18, binaryVersion: 16, servableFrom: 17,
                                                 servableRelease: "1.2.0")
        #expect("\(error)".contains("served by masters of schema 17 and later (buildd 1.2.0 and later)"))
        // Every shipped migration from the one that records servability on says what serves it, and none
        // claims an older schema than the one before it.
        for migration in Migrations.all {
            #expect(migration.servableFrom >= migration.version - 1, "\(migration.name)")
        }
    }
}
