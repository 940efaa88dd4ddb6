@testable import BuilddMasterKit
import Foundation
import Testing

@Suite(.timeLimit(.minutes(1))) struct MigrationTests {
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
