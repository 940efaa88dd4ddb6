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
            Settings come from flags, else from the environment, else from the master's configuration file
            ($BUILDD_CONFIG, or /etc/buildd/master.env when it exists: the file the systemd unit loads), so a
            command run by hand on a master uses what the master uses: BUILDD_DATABASE_URL (a libpq URL),
            BUILDD_BROKER_URL (amqp://user:password@host:port/vhost), BUILDD_QUEUE_TYPE (classic or quorum),
            BUILDD_ARTIFACTS (the shared artifact store), and for serve only BUILDD_PUBLIC_URL, BUILDD_TLS_CERTIFICATE and
            BUILDD_TLS_KEY (its HTTPS listener), BUILDD_ANONYMOUS_READ (on or off), and for enrolling build machines \
            with join tokens BUILDD_BROKER_MANAGEMENT_URL (the broker's management API, with a user that may create \
            users) and BUILDD_ENROL_MASTER_URLS (every master, as enrolled machines list them).
            """,
        version: BuilddRelease.version,
        subcommands: [Migrate.self, Serve.self, CheckConfig.self, WebhookCommand.self, Scan.self, ProcessorCommand.self, ArchSeriesCommand.self, ArchiveCommand.self, BuilderCommand.self,
                      BuildCommand.self, Status.self, TokenCommand.self])
}

/// Where the database and broker are.
struct ConnectionOptions: ParsableArguments {
    @Option(help: """
        PostgreSQL URL (default: $BUILDD_DATABASE_URL); for a primary and replicas, libpq's multi-host form \
        postgresql://pg1,pg2/buildd?target_session_attrs=read-write.
        """)
    var database: String?

    @Option(help: """
        RabbitMQ URL (default: $BUILDD_BROKER_URL); for a cluster, every node's URL separated by commas, tried in \
        turn when one cannot be reached or is lost.
        """)
    var broker: String?

    func databaseURL() throws -> String {
        if let value = try database ?? MasterSettings.value("BUILDD_DATABASE_URL") { return value }
        throw ValidationError("no database: " + MasterSettings.sources(flag: "--database", key: "BUILDD_DATABASE_URL"))
    }

    func brokerURL() throws -> String {
        if let value = try optionalBrokerURL() { return value }
        throw ValidationError("no broker: " + MasterSettings.sources(flag: "--broker", key: "BUILDD_BROKER_URL"))
    }

    func optionalBrokerURL() throws -> String? {
        try broker ?? MasterSettings.value("BUILDD_BROKER_URL")
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
/// The actor the CLI records for a change made on a database host: `cli:` and the user running it.
func cliActor() -> String {
    let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"]
        ?? getpwuid(getuid()).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "uid\(getuid())"
    return "cli:\(user)"
}

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
        discussion: """
            A database a newer release migrated is left as it is when its changes since this binary's schema are \
            expand-only (each migration records the oldest schema that serves it); any other newer schema is \
            refused, naming the release that serves it.
            """)

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await withStore(connection) { store in
            let applied = try await store.migrate { migration in
                print("applying migration \(migration.version) \(migration.name)")
            }
            if !applied.isEmpty {
                print("schema migrated to version \(Migrations.latestVersion)")
            } else if case .newerServable(let version) = try await store.requireCurrentSchema() {
                print("schema is at version \(version), newer than this binary's (\(Migrations.latestVersion)) "
                      + "and served by it: left as it is")
            } else {
                print("schema is up to date (version \(Migrations.latestVersion))")
            }
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show queues per processor, builders and the counts of waiting and running builds.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    struct Report: Encodable {
        let processors: [ProcessorSummary]
        let builders: [BuilderSummary]
        let builds: [String: Int]
    }

    @Flag(help: "Redraw every --interval seconds until interrupted (a live terminal view).") var watch = false
    @Flag(help: """
        Also count finished builds (FULLYBUILT, FAILEDTOBUILD...): a scan of every build ever made. Without it the \
        counts are of the builds still waiting or running, which cost what the live queue costs.
        """)
    var finished = false
    @Option(help: "Seconds between redraws with --watch.") var interval = 2.0

    func validate() throws {
        guard interval >= 0.2 else { throw ValidationError("--interval must be at least 0.2 seconds") }
        if watch && output.json { throw ValidationError("--watch draws for a terminal; use --json without it") }
    }

    func run() async throws {
        try await withStore(connection) { store in
            repeat {
                let report = Report(processors: try await store.processors(), builders: try await store.builders(),
                                    builds: try await store.buildCounts(includingFinished: finished))
                if output.json { return printJSON(report) }
                if watch {
                    // Home and clear, then the whole view: the terminal shows the latest state only.
                    print("\u{1B}[H\u{1B}[2J", terminator: "")
                    let now = Date().formatted(date: .omitted, time: .standard)
                    print("buildd status at \(now) (every \(interval) s, Ctrl-C to stop)\n")
                }
                printProcessors(report.processors)
                print("")
                printBuilders(report.builders)
                print("")
                print("builds: " + report.builds.keys.sorted().map { "\($0)=\(report.builds[$0]!)" }.joined(separator: " "))
                fflush(nil)  // all output streams: the view appears at once through a pipe too
                if watch { try await Task.sleep(for: .milliseconds(Int(interval * 1000))) }
            } while watch
        }
    }
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Manage tokens of the JSON API (needed to cancel, retry, rescore, enable...).",
        subcommands: [Add.self, List.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a token and print it (only once: only its SHA-256 is kept).",
            discussion: """
                Roles, each with everything of those before it: viewer (reads private builds), submitter (submits \
                builds), operator (cancels, retries, rescores; enables, disables and sets builders to manual), \
                admin (manages tokens).

                --role enrol makes a join token instead: good once, for at most a week (--expires is required), \
                with which one new build machine of the --processor(s) enrols itself (`buildd-agent enrol \
                --master URL --join-token T`): its builder, and its own broker user with only its own queues. \
                It is no API token: no other route takes it.
                """)
        @Argument(help: "A name for the token, e.g. the person or tool using it.") var name: String
        @Option(help: "viewer, submitter, operator, admin, or enrol (a join token for one build machine).")
        var role: String
        @Option(help: "How long it is good for: e.g. 90d, 12h, 30m, 3600s (default: until removed; a join token: required, at most 7d).")
        var expires: String?
        @Option(name: .customLong("processor"), help: "--role enrol: a processor the machine will build for (repeatable).")
        var processors: [String] = []
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard Role(rawValue: role) != nil || role == "enrol" else {
                throw ValidationError("--role must be one of \((Role.allCases.map(\.rawValue) + ["enrol"]).joined(separator: ", "))")
            }
            if let expires { _ = try Self.seconds(expires) }
            if role == "enrol" {
                guard let expires else { throw ValidationError("a join token (--role enrol) needs --expires, e.g. 1h") }
                guard try Self.seconds(expires) <= JoinToken.maxLifetimeSeconds else {
                    throw ValidationError("a join token is good for at most 7d")
                }
                guard !processors.isEmpty else { throw ValidationError("a join token (--role enrol) needs --processor") }
            } else if !processors.isEmpty {
                throw ValidationError("--processor goes with --role enrol only")
            }
        }

        /// Seconds of a duration like `90d`, `12h`, `30m` or `45s` (a bare number is seconds).
        static func seconds(_ text: String) throws -> Int {
            let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400]
            let unit = text.last.flatMap { units[$0] }
            let number = unit == nil ? text : String(text.dropLast())
            guard let value = Int(number), value > 0, value <= 10 * 366 * 86400 / (unit ?? 1) else {
                throw ValidationError("--expires must be a positive duration like 90d, 12h, 30m or 3600s")
            }
            return value * (unit ?? 1)
        }

        func run() async throws {
            let seconds = try expires.map(Self.seconds)
            if role == "enrol", let seconds {
                print(try await withStore(connection) {
                    try await $0.addJoinToken(name: name, processors: processors, expiresInSeconds: seconds,
                                              createdBy: cliActor())
                }.token)
                return
            }
            print(try await withStore(connection) {
                try await $0.addToken(name: name, role: Role(rawValue: role)!, expiresInSeconds: seconds,
                                      createdBy: cliActor())
            })
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (name, role, created, last used, expiry; never the tokens).")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        /// One entry of `--json`: an API token as before, or a join token (role `enrol`).
        enum Entry: Encodable {
            case api(APIToken)
            case join(JoinTokenSummary)

            func encode(to encoder: any Encoder) throws {
                switch self {
                case .api(let token): try token.encode(to: encoder)
                case .join(let token): try token.encode(to: encoder)
                }
            }
        }

        func run() async throws {
            let (tokens, joins) = try await withStore(connection) { (try await $0.tokens(), try await $0.joinTokens()) }
            if output.json { return printJSON(tokens.map(Entry.api) + joins.map(Entry.join)) }
            printTable(["TOKEN", "ROLE", "CREATED", "LAST USED", "EXPIRES"], tokens.map {
                [$0.name, $0.role.rawValue, $0.createdAt, $0.lastUsed ?? "never",
                 $0.expired ? "EXPIRED \($0.expiresAt ?? "")" : ($0.expiresAt ?? "never")]
            } + joins.map { join in
                ["\(join.name) (\(join.processors.joined(separator: ",")))", "enrol", join.createdAt,
                 join.usedBy.map { "enrolled \($0) \(join.usedAt ?? "")" } ?? "never",
                 join.state == "expired" ? "EXPIRED \(join.expiresAt)" : join.expiresAt]
            })
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token.")
        @Argument(help: "Token name.") var name: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { store in
                if try await store.removeJoinToken(name: name) { return }
                try await store.removeToken(name: name)
            }
            print("token \(name) removed")
        }
    }
}

func printProcessors(_ processors: [ProcessorSummary]) {
    func wait(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        return seconds < 120 ? "\(Int(seconds)) s" : seconds < 7200 ? "\(Int(seconds / 60)) min" : "\(Int(seconds / 3600)) h"
    }
    printTable(["PROCESSOR", "WAITING", "DISPATCHED", "RUNNING", "BUILDERS", "IDLE", "OLDEST", "EST. WAIT"], processors.map {
        [$0.name, "\($0.waiting)", "\($0.dispatched)", "\($0.running)", "\($0.builders)", "\($0.idleBuilders)",
         $0.waiting == 0 ? "-" : wait($0.oldestWaitSeconds), $0.waiting == 0 ? "-" : wait($0.estimatedWaitSeconds)]
    })
}

func printBuilders(_ builders: [BuilderSummary]) {
    printTable(["BUILDER", "KIND", "PROCESSORS", "OK", "MODE", "STATE", "RELEASE", "BUILD", "FAILURES", "NOTES"], builders.map {
        [$0.name, $0.kind, $0.processors.joined(separator: ","), $0.builderok ? "yes" : "NO",
         $0.manual ? "manual" : ($0.active ? "auto" : "inactive"), $0.agentState ?? "-", $0.agentRelease ?? "-",
         $0.currentBuild.map { "\($0)" } ?? "-", "\($0.failureCount)", $0.failnotes ?? ""]
    })
}
