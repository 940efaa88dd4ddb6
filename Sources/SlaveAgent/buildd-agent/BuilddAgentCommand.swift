import ArgumentParser
import Synchronization
import BuilddAgent
import BuilddShared
import Dispatch
import Logging
// FoundationEssentials only: the full Foundation (with ICU) would cost the agent several MiB of memory.
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Writes a line to standard error.
func printError(_ text: String) {
    let line = Array((text + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

@main
struct BuilddAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buildd-agent",
        abstract: "The buildd build agent: takes jobs of its processors from the broker and builds them.",
        discussion: """
            Exit status of a build command gives the result (buildd's convention, not sbuild's, which uses 3 for
            GIVENBACK: wrap sbuild to translate): 0 OK, 1 or 2 PACKAGEFAIL, 3 DEPFAIL, 4 CHROOTFAIL, anything else \
            (a signal, 127 for a missing command) BUILDERFAIL.
            """,
        version: BuilddRelease.version,
        subcommands: [Run.self, CheckConfig.self, Enrol.self],
        defaultSubcommand: Run.self)
}

struct ConfigOption: ParsableArguments {
    @Option(name: [.short, .long], help: "Configuration file.")
    var config = "/etc/buildd/agent.conf"

    func load() throws -> AgentConfiguration {
        guard let text = AgentConfiguration.readFile(config) else {
            throw ValidationError("cannot read configuration file \(config)")
        }
        return try AgentConfiguration.parse(text, environment: ProcessInfo.processInfo.environment)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the agent until SIGTERM or SIGINT (a running build is given back to the master).")

    @OptionGroup var config: ConfigOption
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @Flag(help: """
        Take one job, build it, report it and exit 0: for machines an autoscaler starts for one build (with \
        `enrol`, from a join token). Exits 0 without a build on SIGTERM.
        """)
    var oneShot = false

    func run() async throws {
        StructuredLogHandler.bootstrap(level: Logger.Level(rawValue: logLevel) ?? .info)
        let configuration: AgentConfiguration
        do {
            configuration = try config.load()
        } catch let invalid as AgentConfiguration.Invalid {
            printError("invalid configuration \(config.config):\n\(invalid)")
            throw ExitCode(78)  // EX_CONFIG
        }
        var logger = Logger(label: "buildd.agent")
        logger[metadataKey: "builder.name"] = "\(configuration.name)"
        let agent = try Agent(configuration: configuration, logger: logger, oneShot: oneShot)
        // The first SIGTERM or SIGINT stops the agent within a bounded time (`stop_timeout` once the running
        // build is given back); a second one stops it at once. Either way an undelivered result stays in the
        // state file, and the agent delivers it when it starts again.
        let signals = Mutex(0)
        let sources = [SIGTERM, SIGINT].map { number -> DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                let count = signals.withLock { count -> Int in
                    count += 1
                    return count
                }
                if count == 1 {
                    logger.info("signal received, shutting down", metadata: ["signal": "\(number)"])
                    Task { await agent.shutdown() }
                } else {
                    agent.stopNow(reason: "a second signal")
                }
            }
            source.resume()
            return source
        }
        try await agent.run()
        sources.forEach { $0.cancel() }
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config", abstract: "Validate the configuration file and say exactly what is wrong.")

    @OptionGroup var config: ConfigOption

    func run() async throws {
        do {
            let configuration = try config.load()
            print("\(config.config): ok (builder \(configuration.name), processors "
                + "\(configuration.processors.joined(separator: ",")), broker \(configuration.brokerURL), "
                + "build types \(configuration.commands.keys.sorted().joined(separator: ",")))")
            for warning in configuration.warnings { print("  warning: \(warning)") }
        } catch let invalid as AgentConfiguration.Invalid {
            print("\(config.config): invalid")
            for problem in invalid.problems { print("  \(problem)") }
            throw ExitCode(78)
        }
    }
}
