import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation
import Logging

@main
struct BuilddMasterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buildd-master",
        abstract: "The buildd build farm master and its operations commands.",
        discussion: """
            Connection settings come from --database/--broker or the environment variables
            BUILDD_DATABASE_URL (a libpq URL) and BUILDD_BROKER_URL (amqp://user:password@host:port/vhost).
            """,
        subcommands: [Migrate.self, Serve.self, Scan.self, ProcessorCommand.self, ArchSeriesCommand.self, BuilderCommand.self,
                      BuildCommand.self, Status.self])
}

/// Where the database and broker are.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "PostgreSQL URL (default: $BUILDD_DATABASE_URL).")
    var database: String?

    @Option(help: "RabbitMQ URL (default: $BUILDD_BROKER_URL).")
    var broker: String?

    func databaseURL() throws -> String {
        if let database { return database }
        if let value = ProcessInfo.processInfo.environment["BUILDD_DATABASE_URL"], !value.isEmpty { return value }
        throw ValidationError("no database: pass --database or set BUILDD_DATABASE_URL")
    }

    func brokerURL() throws -> String {
        if let broker { return broker }
        if let value = ProcessInfo.processInfo.environment["BUILDD_BROKER_URL"], !value.isEmpty { return value }
        throw ValidationError("no broker: pass --broker or set BUILDD_BROKER_URL")
    }

    var optionalBrokerURL: String? {
        broker ?? ProcessInfo.processInfo.environment["BUILDD_BROKER_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    func store() throws -> BuilddStore {
        BuilddStore(url: try databaseURL(), connections: 1, applicationName: "buildd-master cli")
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of a table.")
    var json = false
}

/// Prints a value as pretty JSON on standard output.
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try! encoder.encode(value)
    print(String(decoding: data, as: UTF8.self))
}

/// Prints rows as an aligned table with a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// Runs a store operation, closing the store afterwards; store errors print `error: ...` and exit 1.
func withStore<T>(_ options: ConnectionOptions, _ body: (BuilddStore) async throws -> T) async throws -> T {
    let store = try options.store()
    defer { store.shutdown() }
    do {
        return try await body(store)
    } catch let error as StoreError {
        FileHandle.standardError.write(Data("error: \(error.message)\n".utf8))
        throw ExitCode.failure
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade the database schema (idempotent).",
        discussion: "Refuses a database whose schema is newer than this binary.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await withStore(connection) { store in
            let applied = try await store.migrate { migration in
                print("applying migration \(migration.version) \(migration.name)")
            }
            print(applied.isEmpty ? "schema is up to date (version \(Migrations.latestVersion))"
                  : "schema migrated to version \(Migrations.latestVersion)")
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show queues per processor, builders and build counts.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    struct Report: Encodable {
        let processors: [ProcessorSummary]
        let builders: [BuilderSummary]
        let builds: [String: Int]
    }

    func run() async throws {
        try await withStore(connection) { store in
            let report = Report(processors: try await store.processors(), builders: try await store.builders(),
                                builds: try await store.buildCounts())
            if output.json { return printJSON(report) }
            printProcessors(report.processors)
            print("")
            printBuilders(report.builders)
            print("")
            print("builds: " + report.builds.keys.sorted().map { "\($0)=\(report.builds[$0]!)" }.joined(separator: " "))
        }
    }
}

func printProcessors(_ processors: [ProcessorSummary]) {
    printTable(["PROCESSOR", "WAITING", "DISPATCHED", "RUNNING", "BUILDERS", "IDLE"], processors.map {
        [$0.name, "\($0.waiting)", "\($0.dispatched)", "\($0.running)", "\($0.builders)", "\($0.idleBuilders)"]
    })
}

func printBuilders(_ builders: [BuilderSummary]) {
    printTable(["BUILDER", "KIND", "PROCESSORS", "OK", "MODE", "STATE", "BUILD", "FAILURES", "NOTES"], builders.map {
        [$0.name, $0.kind, $0.processors.joined(separator: ","), $0.builderok ? "yes" : "NO",
         $0.manual ? "manual" : ($0.active ? "auto" : "inactive"), $0.agentState ?? "-",
         $0.currentBuild.map { "\($0)" } ?? "-", "\($0.failureCount)", $0.failnotes ?? ""]
    })
}
