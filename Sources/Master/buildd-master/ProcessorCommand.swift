import AMQP
import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation
import Logging

struct ProcessorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "processor", abstract: "Manage processors (one job queue each).",
        subcommands: [Add.self, List.self, Remove.self])

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a processor that was never used, and its job queue.",
            discussion: """
                Refuses while builds of it wait or run, and when finished builds keep it in their history \
                (exit 1 with the reason). Its arch series and its builders' links to it go with it; when a broker \
                is configured its empty job queue is deleted too.
                """)
        @Argument(help: "Processor name.") var name: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { try await $0.removeProcessor(name) }
            if let brokerURL = try connection.optionalBrokerURL() {
                let name = self.name
                try await withBroker(brokerURL) { client in
                    try await client.perform { try $0.deleteQueue(BrokerTopology.jobQueue(processor: name)) }
                }
            }
            print("processor \(name) removed")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a processor and declare its job queue.",
            discussion: """
                Running masters pick the new processor up within a second and agents of it can start at once.
                When a broker is configured the job queue is declared first and the processor is written to the
                database only once the broker has it, so a refused declaration (a queue type that is not the
                farm's, missing rights) adds nothing; if the database write fails, a queue this command just
                made (empty, unused) is deleted again. Without a broker, running masters declare the queue.
                """)

        @Argument(help: "Processor name, e.g. amd64.") var name: String
        @OptionGroup var queueType: QueueTypeOptions
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard Naming.isValidName(name) else { throw ValidationError("invalid processor name '\(name)'") }
            _ = try queueType.resolved()
        }

        func run() async throws {
            let name = self.name, queueType = try self.queueType.resolved()
            guard let brokerURL = try connection.optionalBrokerURL() else {
                let added = try await withStore(connection) { try await $0.addProcessor(name) }
                print(added ? "processor \(name) added (no broker configured: running masters declare its queue)"
                      : "processor \(name) already exists")
                return
            }
            var added = false
            do {
                try await withBroker(brokerURL) { client in
                    let before = try await client.perform { connection in
                        try BrokerTopology.declareMaster(on: connection, queueType: queueType)
                        return try BrokerTopology.declareJobQueue(processor: name, on: connection, queueType: queueType)
                    }
                    do {
                        added = try await withStore(connection) { try await $0.addProcessor(name) }
                    } catch {
                        // Not written: take back a queue that holds nothing and serves no one.
                        if before.messages == 0 && before.consumers == 0 {
                            try? await client.perform { try $0.deleteQueue(BrokerTopology.jobQueue(processor: name)) }
                        }
                        throw error
                    }
                }
            } catch let error as AMQPError {
                FileHandle.standardError.write(Data("error: processor \(name) not added: \(error)\n".utf8))
                throw ExitCode.failure
            }
            print(added ? "processor \(name) added (queue \(BrokerTopology.jobQueue(processor: name)), \(queueType))"
                  : "processor \(name) already exists")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List processors with their queues.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let processors = try await withStore(connection) { try await $0.processors() }
            if output.json { return printJSON(processors) }
            printProcessors(processors)
        }
    }
}

struct ArchSeriesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archseries", abstract: "Manage distro arch series (DISTRO/SERIES/ARCHTAG).",
        subcommands: [Add.self, List.self, Chroot.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add DISTRO/SERIES/ARCHTAG, built on a processor.")
        @Argument(help: "e.g. ubuntu/noble/amd64") var archSeries: String
        @Option(help: "The processor that builds it.") var processor: String
        @OptionGroup var connection: ConnectionOptions

        func validate() throws { _ = try ArchSeriesName(archSeries) }

        func run() async throws {
            let name = try ArchSeriesName(archSeries)
            try await withStore(connection) {
                try await $0.addArchSeries(distribution: name.distribution, series: name.series, archTag: name.archTag,
                                           processor: processor)
            }
            print("\(archSeries) added on \(processor)")
        }
    }

    struct Chroot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set the chroot tarball builders (agents and launchpad-buildd) of DISTRO/SERIES/ARCHTAG build in.",
            discussion: """
                The file is copied into the artifact store (the masters' --artifacts directory, shared by all \
                masters) and served to builders at /v1/chroots/SHA1; a legacy build of an arch series without a \
                chroot ends CHROOTWAIT. Jobs for agents name it by SHA-256 (/v1/chroots/SHA256): agents fetch, check \
                and cache it, and build commands that make a root per build (binarypackage) unpack it.
                """)
        @Argument(help: "e.g. ubuntu/noble/amd64") var archSeries: String
        @Argument(help: "The chroot tarball.") var file: String
        @OptionGroup var artifactStore: ArtifactOptions
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            _ = try ArchSeriesName(archSeries)
            _ = try artifactStore.directory()
        }

        func run() async throws {
            let name = try ArchSeriesName(archSeries)
            let store = try ArtifactStore(root: try artifactStore.directory())
            let fileName = String(file.split(separator: "/").last ?? "chroot.tar.gz")
            guard Naming.isValidFileName(fileName) else { throw ValidationError("unusable file name \(fileName)") }
            let digest = try store.importFile(at: file, name: fileName)
            let sha1 = try store.sha1(sha256: digest.sha256)
            try await withStore(connection) {
                try await $0.setChroot(distribution: name.distribution, series: name.series, archTag: name.archTag,
                                       name: fileName, sha256: digest.sha256, sha1: sha1, size: digest.size)
            }
            print("\(archSeries): chroot \(fileName) (\(digest.size) bytes, sha1 \(sha1))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List arch series.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        struct Entry: Encodable { let name: String; let processor: String }

        func run() async throws {
            let entries = try await withStore(connection) { try await $0.archSeries() }
            if output.json { return printJSON(entries.map { Entry(name: $0.description, processor: $0.processor) }) }
            printTable(["ARCHSERIES", "PROCESSOR"], entries.map { [$0.description, $0.processor] })
        }
    }
}

/// Runs `body` with a connected broker client, then closes it.
func withBroker(_ url: String, _ body: (AMQPClient) async throws -> Void) async throws {
    var logger = Logger(label: "buildd.cli")
    logger.logLevel = .warning
    let client = AMQPClient(configuration: try AMQPConfiguration(url: url, connectionName: "buildd-cli"), logger: logger)
    client.start()
    do {
        try await client.waitUntilConnected(timeout: .seconds(10))
        try await body(client)
    } catch {
        await client.shutdown()
        throw error
    }
    await client.shutdown()
}

/// DISTRO/SERIES/ARCHTAG.
struct ArchSeriesName {
    let distribution: String
    let series: String
    let archTag: String

    init(_ text: String) throws {
        guard let parts = Naming.archSeries(text) else {
            throw ValidationError("'\(text)' is not DISTRO/SERIES/ARCHTAG (e.g. ubuntu/noble/amd64)")
        }
        (distribution, series, archTag) = parts
    }
}

struct BuilderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "builder", abstract: "Manage builders.",
        subcommands: [Add.self, Set.self, SetReset.self, Reset.self, Clean.self, List.self, Show.self, History.self, Enable.self,
                      Disable.self, Manual.self, Remove.self])

    struct SetReset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-reset",
            abstract: "Set how the master resets a virtualized builder after each build.",
            discussion: """
                With a reset, the builder is DIRTY after every build and gets no job until a master has reset it \
                (CLEANING) and it is CLEAN again. --command runs `/bin/sh -c COMMAND` on the master with \
                BUILDD_BUILDER set; --url is POSTed to; --agent sends the builder's agent `clean`, and it runs its own \
                reset_command (agent.conf) and reports back. Protocol 1.1 (synchronous): the command's success or a 2xx \
                answer ends the reset. Protocol 2.0 (asynchronous): they start it, and the builder stays CLEANING \
                until `builder clean NAME` (or POST /api/v1/builders/NAME/clean). A reset that fails or passes its \
                timeout counts as a builder failure (5 in a row mark it not ok). --none: the builder cleans itself. \
                Such a builder takes its jobs addressed to it: its agent needs `shared_queue = false`.
                """)
        @Argument(help: "Builder name.") var name: String
        @Option(help: "A command the master runs to reset it.") var command: String?
        @Option(help: "A URL the master POSTs to, to reset it.") var url: String?
        @Flag(help: "The builder's agent resets its own machine with its reset_command, when asked.") var agent = false
        @Flag(help: "No reset: the builder's own clean-up after each build is enough.") var none = false
        @Option(name: .customLong("protocol"), help: "1.1 (synchronous) or 2.0 (asynchronous).") var resetProtocol = "1.1"
        @Option(help: "Seconds from the reset's start to its deadline.") var timeout = ResetPlan.defaultTimeoutSeconds
        @OptionGroup var connection: ConnectionOptions

        var plan: ResetPlan {
            get throws {
                guard [command != nil, url != nil, agent, none].filter({ $0 }).count == 1 else {
                    throw ValidationError("give exactly one of --command, --url, --agent and --none")
                }
                guard let proto = ResetProtocol(rawValue: resetProtocol) else {
                    throw ValidationError("--protocol is 1.1 or 2.0")
                }
                let method: ResetMethod = command != nil ? .command : url != nil ? .url : agent ? .agent : .none
                return ResetPlan(method: method, target: command ?? url, resetProtocol: proto, timeoutSeconds: timeout)
            }
        }

        func validate() throws { _ = try plan }

        func run() async throws {
            let plan = try plan
            try await withStore(connection) { try await $0.setBuilderReset(name, plan, actor: cliActor()) }
            print("builder \(name): reset \(plan.description)")
        }
    }

    struct Clean: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say a builder's reset is done: it is CLEAN and may take a job.",
            discussion: "The end of an asynchronous reset (protocol 2.0), or of a reset done by hand.")
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                _ = try await withMaster { try await client.json("POST", try builderPath(name, "clean"), as: [String: String].self) }
                return print("builder \(name) is CLEAN")
            }
            let outcome = try await withStore(connection) { try await $0.resetCompleted(builder: name, actor: cliActor()) }
            if case .ignored(let why) = outcome { return print(why) }
            print("builder \(name) is CLEAN")
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask for a builder's reset now: it is DIRTY, and the master's next pass resets it.",
            discussion: "Only for a builder the master resets (builder set-reset). A builder that holds a build is reset after it.")
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                let answer = try await withMaster { try await client.json("POST", try builderPath(name, "reset"), as: [String: String].self) }
                return print("builder \(name): \(answer["outcome"] ?? "reset requested")")
            }
            switch try await withStore(connection, { try await $0.requestReset(builder: name, actor: cliActor()) }) {
            case .applied(let what), .ignored(let what): print("builder \(name): \(what)")
            case let other: print("builder \(name): \(other)")
            }
        }
    }

    /// What a builder offers builds (``Placement``), as `builder add` and `builder set` take it.
    struct PlacementOptions: ParsableArguments {
        @Flag(inversion: .prefixedNo,
              help: "Virtualized: it takes builds that require virtualization (the default, and every private build), and only those.")
        var virtualized = true
        @Option(help: "Resources any build may ask for with --constraint, comma-separated (e.g. large,fast-disk).")
        var resources = ""
        @Option(help: "Resources kept for the builds that ask for them, comma-separated: it then takes only builds that ask for all of them.")
        var restrictedResources = ""

        var placement: BuilderPlacement {
            BuilderPlacement(virtualized: virtualized, openResources: Self.names(resources),
                             restrictedResources: Self.names(restrictedResources))
        }

        static func names(_ list: String) -> Swift.Set<String> {
            Swift.Set(list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }

        func validate() throws {
            if let problem = placement.problem { throw ValidationError(problem) }
        }
    }

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set what a builder offers builds: virtualization and resources.",
            discussion: """
                Replaces its placement whole (give every resource it keeps). A virtualized builder with no \
                resources takes jobs from its processors' shared queues; any other gets the jobs it may take \
                addressed to it, so its agent needs `shared_queue = false` (and its broker user no read on the \
                shared queues: deploy/rabbitmq/enrol-agent --addressed). Recorded in `builder history`.
                """)
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var placement: PlacementOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let placement = placement.placement
            try await withStore(connection) { try await $0.setBuilderPlacement(name, placement, actor: cliActor()) }
            print("builder \(name): \(placement.description)")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a builder's history, newest first: who enabled, disabled or set it to manual and why, "
                + "and the failures the farm counted against it.")
        @Argument(help: "Builder name.") var name: String
        @Option(help: "How many lines.") var limit = 50
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let lines = try await withStore(connection) { try await $0.builderHistory(name, limit: limit) }
            if output.json { return printJSON(lines) }
            printTable(["AT", "WHAT", "BY", "REASON"], lines.map { [$0.at, $0.kind, $0.actor ?? "-", $0.reason ?? ""] })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show one builder: state, current build and log tail, failnotes, its latest builds.")
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        struct Report: Codable {
            let builder: BuilderSummary
            let state: String
            let recentBuilds: [BuildSummary]
            enum CodingKeys: String, CodingKey {
                case builder, state
                case recentBuilds = "recent_builds"
            }
        }

        func run() async throws {
            let builder: BuilderSummary, recent: [BuildSummary]
            if let client = try remote.client() {
                struct Answer: Decodable {
                    let builder: BuilderSummary
                    let recentBuilds: [BuildSummary]
                    enum CodingKeys: String, CodingKey { case builder, recentBuilds = "recent_builds" }
                }
                let path = String(try builderPath(name, "").dropLast())
                let answer = try await withMaster { try await client.json("GET", path, as: Answer.self) }
                (builder, recent) = (answer.builder, answer.recentBuilds)
            } else {
                (builder, recent) = try await withStore(connection) { try await $0.builder(name) }
            }
            let state = builder.state(silentAfterSeconds: Double(BuilddStore.agentSilenceSeconds))
            if output.json { return printJSON(Report(builder: builder, state: state, recentBuilds: recent)) }
            print("builder \(builder.name): \(state)\(builder.manual ? " (manual mode)" : "")")
            print("kind:       \(builder.kind)\(builder.url.map { " at \($0)" } ?? "")   processors: \(builder.processors.joined(separator: ","))")
            if let placement = builder.placement {
                let reset = builder.reset ?? .none
                print("offers:     \(placement.description)\(placement.takesSharedQueue(reset: reset) ? "" : " (jobs addressed to it)")")
                print("reset:      \(reset.description)\(reset.target.map { ": \($0)" } ?? ""); now \(builder.cleanStatus ?? "CLEAN")")
            }
            print("ok:         \(builder.builderok ? "yes" : "NO")   failures in a row: \(builder.failureCount)")
            if let notes = builder.failnotes { print("failnotes:  \(notes)") }
            print("last seen:  \(builder.lastSeen ?? "never")")
            if let build = builder.currentBuild {
                print("building:   #\(build) \(builder.currentTitle ?? "")")
                if let tail = builder.logTail, !tail.isEmpty { print("log tail:\n\(tail)") }
            }
            if !recent.isEmpty {
                print("")
                printBuilds(recent)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove a builder that runs nothing.",
            discussion: "Its finished builds keep its name in their history. Refuses (exit 1) while it runs a build.")
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            try await withStore(connection) { try await $0.removeBuilder(name) }
            print("builder \(name) removed")
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mark a builder ok again (clears failnotes and its failure count).")
        @Argument(help: "Builder name.") var name: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                _ = try await withMaster { try await client.json("POST", try builderPath(name, "enable"), as: [String: String].self) }
                return print("builder \(name) enabled")
            }
            try await withStore(connection) { try await $0.enableBuilder(name, actor: cliActor()) }
            print("builder \(name) enabled")
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a builder out of dispatch, with a reason.")
        @Argument(help: "Builder name.") var name: String
        @Option(help: "Why; shown as failnotes in `builder list`.") var reason: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                let body = Array(try JSONEncoder().encode(["reason": reason]))
                _ = try await withMaster { try await client.json("POST", try builderPath(name, "disable"), as: [String: String].self, body: body) }
                return print("builder \(name) disabled: \(reason)")
            }
            try await withStore(connection) { try await $0.disableBuilder(name, reason: reason, actor: cliActor()) }
            print("builder \(name) disabled: \(reason)")
        }
    }

    struct Manual: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Switch manual mode: a builder in manual mode gets no work from the dispatcher.")
        @Argument(help: "Builder name.") var name: String
        @Argument(help: "on or off.") var mode: String
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard mode == "on" || mode == "off" else { throw ValidationError("mode must be on or off") }
        }

        func run() async throws {
            if let client = try remote.client() {
                let body = Array("{\"manual\": \(mode == "on")}".utf8)
                _ = try await withMaster { try await client.json("POST", try builderPath(name, "manual"), as: [String: String].self, body: body) }
                return print("builder \(name) manual mode \(mode)")
            }
            try await withStore(connection) { try await $0.setBuilderManual(name, mode == "on", actor: cliActor()) }
            print("builder \(name) manual mode \(mode)")
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register a builder.",
            discussion: """
                Without --url the builder is a buildd-agent that connects to the broker: give --broker-user, the \
                broker user allowed to send its events (masters drop events of that builder from anyone else), or \
                --no-sender-check to accept its events from any broker user (a laboratory only). With --url it is \
                a launchpad-buildd (XML-RPC) builder, followed by the masters, and neither applies.
                """)
        @Argument(help: "Builder name.") var name: String
        @Option(name: .customLong("processor"), help: "A processor it builds for (repeat for several).")
        var processors: [String]
        @Option(help: "launchpad-buildd URL, e.g. http://host:8221.") var url: String?
        @Option(help: "Broker user that speaks for this agent (its events from anyone else are dropped).")
        var brokerUser: String?
        @Flag(help: "Accept this agent's events from any broker user (no sender check; a laboratory only).")
        var noSenderCheck = false
        @OptionGroup var placement: PlacementOptions
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard Naming.isValidName(name) else { throw ValidationError("invalid builder name '\(name)'") }
            guard !processors.isEmpty else { throw ValidationError("give at least one --processor") }
            if url != nil {
                guard brokerUser == nil, !noSenderCheck else {
                    throw ValidationError("--broker-user and --no-sender-check are for agents, not --url builders")
                }
            } else if brokerUser == nil && !noSenderCheck {
                throw ValidationError("""
                    an agent needs --broker-user USER (the broker user that may send its events; \
                    deploy/rabbitmq/enrol-agent makes one), or --no-sender-check to accept them from anyone
                    """)
            } else if brokerUser != nil && noSenderCheck {
                throw ValidationError("--broker-user and --no-sender-check exclude each other")
            }
        }

        func run() async throws {
            try await withStore(connection) {
                try await $0.addBuilder(name: name, processors: processors, url: url, brokerUser: brokerUser,
                                        placement: placement.placement)
            }
            print("builder \(name) added for \(processors.joined(separator: ",")): \(placement.placement.description)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List builders, their state and failnotes.")
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let builders: [BuilderSummary]
            if let client = try remote.client() {
                builders = try await withMaster { try await client.json("GET", "/v1/builders", as: [BuilderSummary].self) }
            } else {
                builders = try await withStore(connection) { try await $0.builders() }
            }
            if output.json { return printJSON(builders) }
            printBuilders(builders)
        }
    }
}

/// `/v1/builders/NAME/ACTION` (a builder's name holds nothing a path must escape: ``Naming/isValidName(_:)``).
func builderPath(_ name: String, _ action: String) throws -> String {
    guard Naming.isValidName(name) else { throw ValidationError("'\(name)' is not a builder name") }
    return "/v1/builders/\(name)/\(action)"
}
