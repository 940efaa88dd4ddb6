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

    func run() async throws {
        var problems: [String] = []
        var settings: [String: String] = [:]
        for key in ["BUILDD_DATABASE_URL", "BUILDD_BROKER_URL", "BUILDD_ARTIFACTS"] {
            do {
                if let value = try MasterSettings.value(key) { settings[key] = value } else {
                    problems.append("\(key) is not set (\(MasterSettings.file ?? MasterSettings.defaultFile))")
                }
            } catch {
                problems.append("\(error)")
            }
        }
        for key in ["BUILDD_DATABASE_URL", "BUILDD_BROKER_URL", "BUILDD_BROKER_MANAGEMENT_URL", "BUILDD_PUBLIC_URL"] {
            if let value = try? MasterSettings.value(key), value.contains("CHANGE-ME") {
                problems.append("\(key) still holds the shipped placeholder CHANGE-ME")
            }
        }
        if let artifacts = settings["BUILDD_ARTIFACTS"] {
            var isDirectory: ObjCBool = false
            if !(FileManager.default.fileExists(atPath: artifacts, isDirectory: &isDirectory) && isDirectory.boolValue) {
                problems.append("BUILDD_ARTIFACTS: \(artifacts) is no directory")
            }
        }
        let certificate = try? MasterSettings.value("BUILDD_TLS_CERTIFICATE")
        let key = try? MasterSettings.value("BUILDD_TLS_KEY")
        if (certificate ?? nil) != nil || (key ?? nil) != nil {
            for path in [certificate ?? nil, key ?? nil] {
                guard let path else { problems.append("BUILDD_TLS_CERTIFICATE and BUILDD_TLS_KEY go together"); continue }
                if !FileManager.default.isReadableFile(atPath: path) { problems.append("cannot read \(path)") }
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
