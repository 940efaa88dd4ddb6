import ArgumentParser
import BuilddShared
import Foundation

/// `buildd-master check-config`: whether the master's settings are complete enough to start, without
/// touching the database or broker. The package's postinst starts the daemon only when this passes, and the
/// unit runs it first, so a master.env still holding the shipped CHANGE-ME placeholders never starts a master.
struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check that the master's settings are complete (no database or broker is contacted).",
        discussion: "Exit status 0 when complete, 78 (EX_CONFIG) with one line per problem when not.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var artifactStore: ArtifactOptions

    func run() async throws {
        // The same checks `serve` and the other commands make of these settings, each problem said once.
        var problems: [String] = []
        func check(_ body: () throws -> Void) {
            do { try body() } catch { problems.append("\(error)") }
        }
        check { _ = try connection.databaseURL() }
        check { _ = try connection.brokerURL() }
        check { _ = try artifactStore.directory(mustExist: true) }
        check { _ = try Serve.tls(certificate: nil, key: nil) }
        for key in ["BUILDD_DATABASE_URL", "BUILDD_BROKER_URL", "BUILDD_BROKER_MANAGEMENT_URL", "BUILDD_PUBLIC_URL"] {
            if let value = try? MasterSettings.value(key), value.contains("CHANGE-ME") {
                problems.append("\(key) still holds the shipped placeholder CHANGE-ME")
            }
        }
        if problems.isEmpty {
            print("\(MasterSettings.file ?? MasterSettings.defaultFile): ok")
            return
        }
        print("\(MasterSettings.file ?? MasterSettings.defaultFile): incomplete")
        for problem in problems { print("  \(problem)") }
        throw ExitCode(78)
    }
}
