import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

func printBuilds(_ builds: [BuildSummary]) {
    printTable(["ID", "STATUS", "PROCESSOR", "SOURCE", "VERSION", "BUILDER", "ATTEMPT", "SCORE"], builds.map {
        ["\($0.id)", $0.status.rawValue, $0.processor, $0.source, $0.version, $0.builder ?? "-", "\($0.attempt)",
         $0.score.map { "\($0)" } ?? "-"]
    })
}

extension Urgency: ExpressibleByArgument {}
extension Pocket: ExpressibleByArgument {}
extension Component: ExpressibleByArgument {}
extension ArchivePurpose: ExpressibleByArgument {}
extension BuildStatus: ExpressibleByArgument {
    public init?(argument: String) { self.init(rawValue: argument.uppercased()) }
}

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build", abstract: "Submit and inspect builds.", subcommands: [Submit.self, List.self, Show.self, Log.self, Cancel.self, Retry.self, Rescore.self])

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a build's log, or follow it while the build runs.",
            discussion: """
                Over the API (--master) the log is read as the agent sends it: the whole log so far of the \
                build's current attempt, and with --follow what it grows by until the attempt ends (as \
                `GET /v1/builds/ID/log?offset=N` serves it; legacy builders show their tail). With the database \
                instead, a finished build's log comes from the artifact store (--artifacts) and a running \
                build shows the tail its builder last sent. Exit 1 when there is no log.
                """)
        @Argument(help: "Build id.") var id: Int64
        @Flag(help: "Keep printing the log as it grows until the build's attempt ends (needs --master).")
        var follow = false
        @OptionGroup var remote: MasterOptions
        @OptionGroup var artifactStore: ArtifactOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                return try await withMaster { try await Self.read(id, from: client, follow: follow) }
            }
            if follow {
                FileHandle.standardError.write(Data("error: --follow reads the log from a master: give --master URL (or BUILDD_MASTER_URL)\n".utf8))
                throw ExitCode.validationFailure
            }
            let detail = try await withStore(connection) { try await $0.build(id) }
            if let log = detail.files.last(where: { $0.kind == "log" }) {
                let artifacts = try artifactStore.directory()
                let path = try ArtifactStore(root: artifacts).path(sha256: log.sha256)
                guard let handle = FileHandle(forReadingAtPath: path) else {
                    FileHandle.standardError.write(Data("error: log \(log.name) is not in \(artifacts) (is --artifacts right?)\n".utf8))
                    throw ExitCode.failure
                }
                defer { try? handle.close() }
                while let chunk = try handle.read(upToCount: 64 * 1024), !chunk.isEmpty {
                    FileHandle.standardOutput.write(chunk)
                }
                return
            }
            try Self.printTail(detail, id)
        }

        /// Reads the current attempt's log from its start, and with `follow` until the attempt is over; each
        /// byte is printed once (every read goes on from the offset the master gave).
        static func read(_ id: Int64, from client: MasterClient, follow: Bool) async throws {
            var offset: Int64 = 0
            var attempt: String?
            while true {
                let query = "offset=\(offset)" + (attempt.map { "&attempt=\($0)" } ?? "")
                let response = try await client.send("GET", "/v1/builds/\(id)/log?\(query)", timeoutSeconds: 300)
                try MasterClient.check(response)
                if !response.body.isEmpty { FileHandle.standardOutput.write(Data(response.body)) }
                attempt = attempt ?? response.headers["x-log-attempt"]
                offset = response.headers["x-log-offset"].flatMap { Int64($0) } ?? offset + Int64(response.body.count)
                let complete = response.headers["x-log-complete"] == "true"
                if complete || !follow {
                    if offset == 0 {
                        // No log sent (a legacy builder's build, or none yet): what the builder last said.
                        try printTail(try await client.json("GET", "/v1/builds/\(id)", as: BuildDetail.self), id)
                    }
                    return
                }
                if response.body.isEmpty { try await Task.sleep(for: .seconds(1)) }
            }
        }

        static func printTail(_ detail: BuildDetail, _ id: Int64) throws {
            if let tail = detail.logtail, !tail.isEmpty {
                FileHandle.standardError.write(Data("build \(id) is \(detail.build.status.rawValue); its log so far ends:\n".utf8))
                print(tail)
                return
            }
            FileHandle.standardError.write(Data("error: build \(id) (\(detail.build.status.rawValue)) has no log yet\n".utf8))
            throw ExitCode.failure
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel a build.",
            discussion: """
                A waiting build is CANCELLED at once. A running one becomes CANCELLING: its builder is told to abort
                and the build ends CANCELLED when it confirms; without a confirmation within 180 s it ends CANCELLED
                and the builder's failure count grows.
                """)
        @Argument(help: "Build id.") var id: Int64
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                let answer = try await withMaster { try await client.json("POST", "/v1/builds/\(id)/cancel", as: [String: String].self) }
                return print("build \(id) \(answer["status"] ?? "?")")
            }
            let status = try await withStore(connection) { try await $0.cancel(id, actor: cliActor()) }
            print("build \(id) \(status.rawValue)")
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a failed or cancelled build again (FAILEDTOBUILD, MANUALDEPWAIT, CHROOTWAIT, FAILEDTOUPLOAD, CANCELLED).")
        @Argument(help: "Build id.") var id: Int64
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            if let client = try remote.client() {
                _ = try await withMaster { try await client.json("POST", "/v1/builds/\(id)/retry", as: [String: String].self) }
                return print("build \(id) NEEDSBUILD")
            }
            try await withStore(connection) { try await $0.retry(id, actor: cliActor()) }
            print("build \(id) NEEDSBUILD")
        }
    }

    struct Rescore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a waiting build's score by hand, or --clear to go back to the computed one.")
        @Argument(help: "Build id.") var id: Int64
        @Argument(help: "The new score.") var score: Int?
        @Flag(help: "Drop the manual score.") var clear = false
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard (score == nil) == clear else { throw ValidationError("give either a SCORE or --clear") }
        }

        func run() async throws {
            if let client = try remote.client() {
                let body = Array("{\"score\": \(clear ? "null" : "\(score ?? 0)")}".utf8)
                let answer = try await withMaster {
                    try await client.json("POST", "/v1/builds/\(id)/rescore", as: [String: String].self, body: body)
                }
                return print("build \(id) score \(answer["score"] ?? "?")\(clear ? " (computed)" : " (manual)")")
            }
            let now = try await withStore(connection) { try await $0.rescore(id, score: clear ? nil : score, actor: cliActor()) }
            print("build \(id) score \(now)\(clear ? " (computed)" : " (manual)")")
        }
    }

    struct Submit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a build of SOURCE VERSION on DISTRO/SERIES/ARCHTAG.",
            discussion: """
                Prints the new build's id. Its score follows Launchpad's rules (urgency, pocket, component, archive).

                With --master (or BUILDD_MASTER_URL) the submit goes through the HTTP API with a token of role \
                submitter: the source files are checked here, uploaded by SHA-256 (each once: a file the farm has \
                is not sent again), and the submit carries an Idempotency-Key, so retrying it (on to the next \
                master when one does not answer) never makes two builds. Neither the database nor the artifact \
                directory is needed then.

                --wait follows the build to its end and exits with its result: 0 FULLYBUILT, 1 FAILEDTOBUILD or \
                FAILEDTOUPLOAD, 2 MANUALDEPWAIT, 3 CHROOTWAIT, 4 CANCELLED or SUPERSEDED.
                """)
        @Argument(help: "e.g. ubuntu/noble/amd64") var archSeries: String
        @Argument(help: "Source package name.") var source: String
        @Argument(help: "Source version.") var version: String
        @Option(name: .customLong("type"), help: "Build type (binarypackage, command, ...).") var buildType = "binarypackage"
        @Option(help: "low, medium, high or emergency.") var urgency: Urgency = .medium
        @Option(help: "release, security, updates, proposed or backports.") var pocket: Pocket = .release
        @Option(help: "main, restricted, universe, multiverse or partner.") var component: Component = .main
        @Option(help: "primary, private or copy.") var archive: ArchivePurpose = .primary
        @Option(name: .customLong("source-file"),
                help: "A source file (.dsc, tarballs) copied into the artifact store for the agent (repeatable).")
        var sourceFiles: [String] = []
        @Option(help: "A .dsc on disk: it and the files it lists (beside it) are checked against its SHA-256 and stored.")
        var dsc: String?
        @Flag(help: "Fetch SOURCE VERSION's .dsc and files from the Debian archive of --archive-sources (with apt), check them and store them.")
        var fromArchive = false
        @Option(help: "The apt sources file naming the archive (its deb entries are read as deb-src).")
        var archiveSources = "/etc/apt/sources.list.d/debian.sources"
        @Option(help: "Check the .dsc's OpenPGP signature against this keyring (gpgv) before storing anything.")
        var keyring: String?
        @Option(name: .customLong("constraint"),
                help: "A resource its builder must offer, e.g. gpu (repeatable; see `builder add --resources`).")
        var constraints: [String] = []
        @Flag(inversion: .prefixedNo,
              help: "Require a virtualized builder (Launchpad's default; a private archive's build always does).")
        var virtualized = true
        @Option(name: .customLong("in-archive"),
                help: "The archive it is for (`archive add`): its apt sources and dependencies; a private one makes it private.")
        var inArchive: String?
        @Flag(help: "Build the architecture-independent packages too (Launchpad's arch_indep).") var archIndep = false
        @Flag(help: "Wait for the build to end, and exit with its result (see above).") var wait = false
        @OptionGroup var remote: MasterOptions
        @OptionGroup var artifactStore: ArtifactOptions
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func validate() throws {
            _ = try ArchSeriesName(archSeries)
            let overAPI = try remote.client() != nil
            if fromArchive && dsc != nil { throw ValidationError("--from-archive and --dsc exclude each other") }
            if (fromArchive || dsc != nil) && !sourceFiles.isEmpty {
                throw ValidationError("--source-file does not go with --from-archive or --dsc: the .dsc lists the files")
            }
            if keyring != nil && !fromArchive && dsc == nil { throw ValidationError("--keyring checks a .dsc: use it with --dsc or --from-archive") }
            if (fromArchive || dsc != nil) && !overAPI { _ = try artifactStore.directory() }
            for path in sourceFiles {
                let name = String(path.split(separator: "/").last ?? "")
                guard Naming.isValidFileName(name) else { throw ValidationError("source file name not allowed: \(name)") }
            }
            if !sourceFiles.isEmpty && !overAPI { _ = try artifactStore.directory() }
            if wait && !overAPI { throw ValidationError("--wait follows the build through the API: give --master") }
            if let problem = Placement.namesProblem(constraints, what: "--constraint") { throw ValidationError(problem) }
            if !virtualized && archive == .private {
                throw ValidationError("a private archive's build always runs on a virtualized builder: drop --no-virtualized")
            }
        }

        struct Submitted: Encodable { let id: Int64 }

        func run() async throws {
            let name = try ArchSeriesName(archSeries)
            if let client = try remote.client() { return try await withMaster { try await submit(through: client, name) } }
            var digests: [FileDigest] = []
            if fromArchive || dsc != nil {
                let store = try ArtifactStore(root: try artifactStore.directory())
                if let dsc {
                    digests = try SourceImport.importDsc(at: dsc, keyring: keyring, into: store,
                                                         expecting: (source, version))
                } else {
                    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("buildd-source-\(UUID().uuidString)").path
                    defer { try? FileManager.default.removeItem(atPath: folder) }
                    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                    let path = try SourceImport.fetchFromArchive(name: source, version: version, sources: archiveSources,
                                                                 into: folder)
                    digests = try SourceImport.importDsc(at: path, keyring: keyring, into: store,
                                                         expecting: (source, version))
                }
            } else if !sourceFiles.isEmpty {
                let store = try ArtifactStore(root: try artifactStore.directory())
                for path in sourceFiles {
                    digests.append(try store.importFile(at: path, name: String(path.split(separator: "/").last!)))
                }
            }
            var request = BuildRequest(distribution: name.distribution, series: name.series, archTag: name.archTag,
                                       sourceName: source, sourceVersion: version, buildType: buildType,
                                       urgency: urgency, pocket: pocket, component: component, archive: archive,
                                       sourceFiles: digests)
            request.virtualized = virtualized
            request.constraints = Set(constraints)
            request.archiveName = inArchive
            request.archIndep = archIndep
            let id = try await withStore(connection) { try await $0.submit(request) }
            if output.json { printJSON(Submitted(id: id)) } else { print(id) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List builds, newest first.")
        @Option(name: .customLong("status"), help: "Only builds in this status (repeatable).") var statuses: [BuildStatus] = []
        @Option(help: "Only builds of this processor.") var processor: String?
        @Option(help: "At most this many builds.") var limit = 100
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            if let client = try remote.client() {
                var query = ["limit=\(limit)"]
                if !statuses.isEmpty { query.append("status=" + statuses.map(\.rawValue).joined(separator: ",")) }
                if let processor {
                    guard Naming.isValidName(processor) else { throw ValidationError("'\(processor)' is not a processor name") }
                    query.append("processor=\(processor)")
                }
                let builds = try await withMaster {
                    try await client.json("GET", "/v1/builds?" + query.joined(separator: "&"), as: [BuildSummary].self)
                }
                if output.json { return printJSON(builds) }
                return printBuilds(builds)
            }
            let builds = try await withStore(connection) {
                try await $0.builds(statuses: statuses, processor: processor, limit: limit)
            }
            if output.json { return printJSON(builds) }
            printBuilds(builds)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one build: files, log tail and history.")
        @Argument(help: "Build id.") var id: Int64
        @OptionGroup var remote: MasterOptions
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        func run() async throws {
            let detail: BuildDetail
            if let client = try remote.client() {
                detail = try await withMaster { try await client.json("GET", "/v1/builds/\(id)", as: BuildDetail.self) }
            } else {
                detail = try await withStore(connection) { try await $0.build(id) }
            }
            if output.json { return printJSON(detail) }
            let build = detail.build
            print("build \(build.id): \(build.source) \(build.version) on \(build.archSeries) (\(build.buildType))")
            print("status:    \(build.status.rawValue)\(build.result.map { " (\($0))" } ?? "")")
            print("builder:   \(build.builder ?? "-")   attempt: \(build.attempt)   failures: \(build.failureCount)")
            print("score:     \(build.score.map { "\($0)" } ?? "-")   urgency \(detail.urgency), pocket \(detail.pocket), component \(detail.component)")
            if let requirements = detail.requirements { print("needs:     \(requirements.description)") }
            if let why = detail.waitingBecause { print("waiting:   \(why)") }
            if let archive = detail.archiveName { print("archive:   \(archive)") }
            if let missing = detail.dependencies { print("missing:   \(missing) (retried when its archives have it)") }
            if let notes = build.failnotes { print("notes:     \(notes)") }
            print("created:   \(build.dateCreated)   started: \(build.dateStarted ?? "-")   finished: \(build.dateFinished ?? "-")")
            if !detail.files.isEmpty {
                print("files:")
                for file in detail.files { print("  \(file.name)  \(file.size) bytes  sha256:\(file.sha256)  [\(file.kind)]") }
            }
            print("history:")
            for event in detail.history {
                print("  \(event.at)  \(event.status)  attempt \(event.attempt)  \(event.builder ?? "")  \(event.message ?? "")")
            }
            if let tail = detail.logtail, !tail.isEmpty { print("log tail:\n\(tail)") }
        }
    }
}
