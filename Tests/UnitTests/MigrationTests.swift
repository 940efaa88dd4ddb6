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
}
