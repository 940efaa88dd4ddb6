import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// Operating the farm: the JSON API with tokens, `/metrics`, the ops CLI, and security enforced by the
/// broker, against a real master, PostgreSQL and RabbitMQ.
@Suite(.serialized, .timeLimit(.minutes(5))) struct OperationsTests {
    func get(_ farm: FarmHarness, _ path: String) async throws -> (status: Int, body: [UInt8]) {
        let url = farm.masterURLs[0] + path
        let response = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 10) }
        return (response.status, response.body)
    }

    func json(_ farm: FarmHarness, _ path: String) async throws -> Any {
        let (status, body) = try await get(farm, path)
        #expect(status == 200, "GET \(path): \(status) \(String(decoding: body, as: UTF8.self))")
        return try JSONSerialization.jsonObject(with: Data(body))
    }

    func post(_ farm: FarmHarness, _ path: String, token: String?, body: String = "{}") async throws -> Int {
        let url = farm.masterURLs[0] + path
        var headers = ["Content-Type": "application/json"]
        if let token { headers["Authorization"] = "Bearer \(token)" }
        let sent = headers
        return try await runBlocking {
            try SimpleHTTPClient.send(method: "POST", url: url, headers: sent, body: .bytes(Array(body.utf8)),
                                      timeoutSeconds: 10).status
        }
    }

    func metrics(_ farm: FarmHarness) async throws -> String {
        let (status, body) = try await get(farm, "/metrics")
        #expect(status == 200)
        return String(decoding: body, as: UTF8.self)
    }

    /// The value of one sample line of `/metrics`, e.g. `buildd_queue_depth{processor="amd64"}`.
    func sample(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    func submit(_ farm: FarmHarness, _ source: String, urgency: Urgency = .medium) async throws -> Int64 {
        try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                 sourceName: source, sourceVersion: "1.0", urgency: urgency))
    }

    @Test func theAPIReadsOpenlyAndChangesOnlyWithAToken() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "api-agent", processors: ["amd64"])
            try await farm.startMaster()
            let low = try await submit(farm, "low", urgency: .low)
            let high = try await submit(farm, "high", urgency: .high)

            // Reading needs no token.
            let queue = try #require(try await json(farm, "/v1/queue/amd64") as? [[String: Any]])
            #expect(queue.compactMap { $0["id"] as? Int } == [Int(high), Int(low)], "dispatch order: best score first")
            let processors = try #require(try await json(farm, "/v1/processors") as? [[String: Any]])
            #expect(processors.first?["waiting"] as? Int == 2)
            let builders = try #require(try await json(farm, "/v1/builders") as? [[String: Any]])
            #expect(builders.first?["name"] as? String == "api-agent" && builders.first?["state"] as? String == "offline")
            let listed = try #require(try await json(farm, "/v1/builds?status=NEEDSBUILD") as? [[String: Any]])
            #expect(listed.count == 2)
            #expect(try await get(farm, "/v1/queue/sparc").status == 404)
            #expect(try await get(farm, "/v1/builds?status=NOPE").status == 400)

            // Changing needs a token: none 401, a wrong one 403, a good one works.
            #expect(try await post(farm, "/v1/builds/\(low)/rescore", token: nil, body: #"{"score": 99999}"#) == 401)
            #expect(try await post(farm, "/v1/builds/\(low)/rescore", token: "bdt_wrong", body: #"{"score": 99999}"#) == 403)
            let made = try await farm.cli("token", "add", "ops-test", "--role", "operator")
            #expect(made.status == 0)
            let token = made.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await post(farm, "/v1/builds/\(low)/rescore", token: token, body: #"{"score": 99999}"#) == 200)
            let reordered = try #require(try await json(farm, "/v1/queue/amd64") as? [[String: Any]])
            #expect(reordered.compactMap { $0["id"] as? Int } == [Int(low), Int(high)])
            #expect(try await post(farm, "/v1/builds/\(low)/rescore", token: token, body: "not json") == 400)
            #expect(try await post(farm, "/v1/builds/\(high)/cancel", token: token) == 200)
            #expect(try await farm.store.build(high).build.status == .cancelled)
            #expect(try await post(farm, "/v1/builds/\(high)/cancel", token: token) == 409, "a cancelled build cannot be cancelled")
            #expect(try await post(farm, "/v1/builds/\(high)/retry", token: token) == 200)
            #expect(try await farm.store.build(high).build.status == .needsBuild)
            #expect(try await post(farm, "/v1/builders/api-agent/disable", token: token, body: #"{"reason": "disk"}"#) == 200)
            var builder = try #require(try await farm.store.builders().first)
            #expect(!builder.builderok && builder.failnotes == "disk")
            #expect(try await post(farm, "/v1/builders/api-agent/enable", token: token) == 200)
            #expect(try await post(farm, "/v1/builders/api-agent/manual", token: token, body: #"{"manual": true}"#) == 200)
            builder = try #require(try await farm.store.builders().first)
            #expect(builder.builderok && builder.manual)
            #expect(try await post(farm, "/v1/builders/nobody/enable", token: token) == 404)

            let tokens = try await farm.cli("token", "list", "--json")
            #expect(tokens.output.contains("\"ops-test\"") && !tokens.output.contains(token), "the token itself is never listed")
            #expect(try await farm.cli("token", "remove", "ops-test").status == 0)
            #expect(try await post(farm, "/v1/builds/\(low)/rescore", token: token, body: #"{"score": null}"#) == 403)
        }
    }

    @Test func metricsShowQueuesBuildersBuildsAndDispatch() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "metrics-agent", processors: ["amd64"])
            try await farm.startMaster()
            for index in 0..<3 { _ = try await submit(farm, "waiting-\(index)") }
            var text = try await metrics(farm)
            #expect(sample(text, #"buildd_queue_depth{processor="amd64"}"#) == 3, "\(text)")
            #expect((sample(text, #"buildd_queue_oldest_wait_seconds{processor="amd64"}"#) ?? -1) >= 0)
            #expect(sample(text, #"buildd_builders{state="offline"}"#) == 1)
            // Every state has its series from the first scrape, at zero when no builder is in it.
            for state in BuilderAvailability.allCases where state != .offline {
                #expect(sample(text, "buildd_builders{state=\"\(state.rawValue)\"}") == 0, "\(state.rawValue)")
            }
            try farm.startAgent("metrics-agent", processors: ["amd64"], sampleSeconds: 0.2)
            #expect(try await farm.waitForQuiet(timeout: .seconds(60)))
            text = try await metrics(farm)
            #expect(sample(text, #"buildd_queue_depth{processor="amd64"}"#) == 0)
            #expect(sample(text, #"buildd_builders{state="idle"}"#) == 1, "\(text)")
            #expect(sample(text, #"buildd_dispatch_latency_seconds_count"#) == 3)
            #expect(sample(text, #"buildd_build_duration_seconds_count{status="FULLYBUILT"}"#) == 3, "\(text)")
            #expect(sample(text, #"buildd_jobs_published_total{processor="amd64"}"#) == 3)
            #expect(try await get(farm, "/healthz").status == 200)
        }
    }

    @Test func theOpsCommandLine() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            #expect(try await farm.cli("processor", "add", "riscv64").status == 0)
            #expect(try await farm.cli("archseries", "add", "ubuntu/noble/riscv64", "--processor", "riscv64").status == 0)
            let id = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "riscv64",
                                                              sourceName: "waits", sourceVersion: "1.0"))
            let refused = try await farm.cli("processor", "remove", "riscv64")
            #expect(refused.status == 1 && refused.error.contains("waiting or running"), "\(refused)")
            #expect(try await farm.cli("build", "cancel", "\(id)").status == 0)
            let history = try await farm.cli("processor", "remove", "riscv64")
            #expect(history.status == 1 && history.error.contains("history"), "a processor with finished builds stays")
            #expect(try await farm.cli("processor", "add", "sparc").status == 0)
            #expect(try await farm.cli("processor", "remove", "sparc").status == 0)
            #expect(try await !farm.store.processorNames().contains("sparc"))
            #expect(try await farm.cli("processor", "remove", "sparc").status == 1)

            // A build with a log, by an agent; then builder show, build log, builder remove.
            try await farm.store.addBuilder(name: "cli-agent", processors: ["amd64"])
            try await farm.startMaster()
            try farm.startAgent("cli-agent", processors: ["amd64"], sampleSeconds: 0.2)
            let built = try await submit(farm, "logged")
            #expect(try await eventually(timeout: .seconds(30)) { try await farm.store.build(built).build.status == .fullyBuilt })
            let show = try await farm.cli("builder", "show", "cli-agent")
            #expect(show.status == 0 && show.output.contains("builder cli-agent: idle") && show.output.contains("logged"),
                    "\(show)")
            let shown = try await farm.cli("builder", "show", "cli-agent", "--json")
            let object = try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any]
            #expect((object?["recent_builds"] as? [Any])?.count == 1)
            let log = try await farm.cli("build", "log", "\(built)", "--artifacts", farm.artifactRoot)
            #expect(log.status == 0 && log.output.contains("logged"), "\(log)")
            let noLog = try await farm.cli("build", "log", "\(id)", "--artifacts", farm.artifactRoot)
            #expect(noLog.status == 1 && noLog.error.contains("no log"))
            let status = try await farm.cli("status", "--json")
            #expect(status.status == 0 && status.output.contains("\"estimated_wait_seconds\""))
            #expect(try await farm.cli("builder", "remove", "cli-agent").status == 0)
            #expect(try await farm.store.build(built).history.contains { $0.builder == "cli-agent" }, "history keeps the name")
            let unknown = try await farm.cli("builder", "show", "cli-agent")
            #expect(unknown.status == 1 && unknown.error.contains("no builder named"))
            #expect(try await farm.cli("build", "list", "--bogus").status == 64, "bad usage exits 64")
        }
    }

    /// Agents' broker users, made by deploy/rabbitmq/enrol-agent, can only speak for themselves; what the
    /// master cannot read or may not apply goes to buildd.dead, changes nothing and is counted.
    @Test func securityIsEnforcedByTheBrokerAndTheMaster() async throws {
        let farm = try await FarmHarness.make()
        let intruder = TestEnvironment.uniqueName("intruder")
        let victim = TestEnvironment.uniqueName("victim")
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: intruder, processors: ["amd64"], brokerUser: intruder)
            try await farm.store.addBuilder(name: victim, processors: ["amd64"], brokerUser: victim)
            try await farm.startMaster()
            let management = try TestEnvironment.managementURL
            for name in [intruder, victim] {
                let enrolled = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"),
                                                         [name, "amd64"], environment: [
                    "BUILDD_MANAGEMENT_URL": management, "BUILDD_VHOST": farm.vhost.name, "BUILDD_AGENT_PASSWORD": "pw-\(name)",
                ])
                #expect(enrolled.status == 0, "\(enrolled)")
            }
            defer { Task { await Self.deleteUsers([intruder, victim]) } }
            let base = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "\(intruder):pw-\(intruder)@")
            let configuration = try AMQPConfiguration(url: base, connectionName: "intruder")
            func event(_ builder: String) -> [UInt8] {
                WireCodec.encode(AgentEvent(kind: .heartbeat, builder: builder, session: "s", seq: 1_000, state: .idle))
            }
            func properties(user: String) -> MessageProperties {
                MessageProperties(userID: user, headers: [BrokerTopology.builderHeader: .string(intruder)])
            }

            // The broker refuses a routing key of another builder, and a user_id that is not the sender's.
            let foreignKey = try await Self.publish(configuration, routingKey: "\(victim).heartbeat", body: event(victim),
                                                    properties: properties(user: intruder))
            #expect(foreignKey?.code == 403, "\(String(describing: foreignKey))")
            let foreignUser = try await Self.publish(configuration, routingKey: "\(intruder).heartbeat", body: event(victim),
                                                     properties: properties(user: victim))
            #expect(foreignUser?.code == 406, "\(String(describing: foreignUser))")

            // What the broker lets through but the master refuses: dead-lettered.
            var oversized = Array("{\"v\":1,\"pad\":\"".utf8) + Array(repeating: UInt8(ascii: "x"), count: 300 * 1024)
            oversized += Array("\"}".utf8)
            var unknownVersion = String(decoding: event(intruder), as: UTF8.self)
            unknownVersion = unknownVersion.replacingOccurrences(of: "\"v\":1", with: "\"v\":99")
            let refused: [[UInt8]] = [event(victim), Array("{not json".utf8), Array(unknownVersion.utf8), oversized]
            for body in refused {
                let error = try await Self.publish(configuration, routingKey: "\(intruder).heartbeat", body: body,
                                                   properties: properties(user: intruder))
                #expect(error == nil, "the broker accepts these; the master must refuse them")
            }
            let dead = try await eventually(timeout: .seconds(15)) {
                try await farm.vhost.messageCount(queue: BrokerTopology.deadLetterQueue) == refused.count
            }
            #expect(dead, "each refused message is in buildd.dead")
            let text = try await metrics(farm)
            for reason in ["routing_key", "malformed", "unsupported_version", "too_large"] {
                #expect(sample(text, "buildd_messages_rejected_total{reason=\"\(reason)\"}") == 1, "\(reason)\n\(text)")
            }
            let row = try #require(try await farm.store.database.query(
                "SELECT last_seq, agent_state, last_seen FROM builder WHERE name = $1", [victim]).first)
            #expect(try row.int64("last_seq") == 0 && row["agent_state"] == nil && row["last_seen"] == nil,
                    "nothing changed for the victim")
            #expect(farm.masters.allSatisfy { $0.process.isRunning })
            #expect(try await get(farm, "/healthz").status == 200)
        }
    }

    /// Connects as an agent, publishes one message and reports the broker's refusal, if any.
    static func publish(_ configuration: AMQPConfiguration, routingKey: String, body: [UInt8],
                        properties: MessageProperties) async throws -> AMQPError? {
        try await runBlocking {
            let connection = try AMQPConnection(configuration: configuration)
            defer { connection.close() }
            try connection.openChannel(1)
            try connection.confirmSelect(channel: 1)
            try connection.publish(exchange: BrokerTopology.statusExchange, routingKey: routingKey, body: body,
                                   properties: properties, channel: 1)
            let clock = ContinuousClock()
            let deadline = clock.now + .seconds(5)
            while clock.now < deadline {
                do {
                    if case .confirm(_, _, _, let ack)? = try connection.nextEvent(timeout: .milliseconds(200)) {
                        return ack ? nil : AMQPError(.server, text: "nacked")
                    }
                } catch let error as AMQPError {
                    return error
                }
            }
            return AMQPError(.library, text: "no confirm within 5 s")
        }
    }

    static func deleteUsers(_ names: [String]) async {
        guard let management = try? TestEnvironment.managementURL else { return }
        for name in names {
            _ = try? await runBlocking { try SimpleHTTPClient.send(method: "DELETE", url: management + "/api/users/\(name)") }
        }
    }
}

/// The command line refuses what would only hurt later (issue 11's traps), and a refusal changes nothing.
@Suite(.serialized, .timeLimit(.minutes(5))) struct CommandLineGuardTests {
    @Test func builderAddNeedsASenderOrAnExplicitNoCheck() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            let refused = try await farm.cli("builder", "add", "nameless", "--processor", "amd64")
            #expect(refused.status == 64 && refused.error.contains("--broker-user"), "\(refused)")
            #expect(try await farm.store.builders().isEmpty, "a refused builder add adds nothing")
            let both = try await farm.cli("builder", "add", "both", "--processor", "amd64", "--broker-user", "both",
                                          "--no-sender-check")
            #expect(both.status == 64, "\(both)")
            #expect(try await farm.cli("builder", "add", "owned", "--processor", "amd64", "--broker-user", "owned").status == 0)
            #expect(try await farm.cli("builder", "add", "lab", "--processor", "amd64", "--no-sender-check").status == 0)
            #expect(try await farm.cli("builder", "add", "lp1", "--processor", "amd64", "--url", "http://127.0.0.1:8221").status == 0)
            let names = try await farm.store.builders().map(\.name).sorted()
            #expect(names == ["lab", "lp1", "owned"])
            // The sender check is on for the builder with a broker user, off only for the one that said so.
            let url = farm.database.url
            let owners = try await runBlocking {
                try PostgresConnection(url: url).query("SELECT name, broker_user FROM builder ORDER BY name").rows
                    .map { "\(try $0.string("name"))=\($0["broker_user"] ?? "-")" }
            }
            #expect(owners == ["lab=-", "lp1=-", "owned=owned"])
        }
    }

    @Test func storeCommandsNeedTheArtifactStoreAndReadTheMastersFile() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            let source = farm.directory + "/hello_1.0.dsc"
            try Data("Source: hello\n".utf8).write(to: URL(fileURLWithPath: source))
            let elsewhere = FileManager.default.currentDirectoryPath + "/artifacts"
            let existedBefore = FileManager.default.fileExists(atPath: elsewhere)

            let noStore = try await farm.cli("build", "submit", "ubuntu/noble/amd64", "hello", "1.0", "--source-file", source)
            #expect(noStore.status != 0 && noStore.error.contains("BUILDD_ARTIFACTS"), "\(noStore)")
            let missing = try await farm.cli("build", "submit", "ubuntu/noble/amd64", "hello", "1.0", "--source-file", source,
                                             "--artifacts", farm.directory + "/no-such-store")
            #expect(missing.status != 0 && missing.error.contains("does not exist"), "\(missing)")
            let chroot = try await farm.cli("archseries", "chroot", "ubuntu/noble/amd64", source)
            #expect(chroot.status != 0 && chroot.error.contains("BUILDD_ARTIFACTS"), "\(chroot)")
            #expect(try await farm.store.builds(statuses: [], processor: nil, limit: 10).isEmpty, "nothing submitted")
            #expect(FileManager.default.fileExists(atPath: elsewhere) == existedBefore, "no store made in the working directory")

            // The same command with the master's configuration file: the store comes from BUILDD_ARTIFACTS there.
            try FileManager.default.createDirectory(atPath: farm.artifactRoot, withIntermediateDirectories: true)
            let file = farm.directory + "/master.env"
            try Data("# as deploy/examples/master.env\nBUILDD_ARTIFACTS=\"\(farm.artifactRoot)\"\n".utf8)
                .write(to: URL(fileURLWithPath: file))
            let submitted = try await farm.cli("build", "submit", "ubuntu/noble/amd64", "hello", "1.0", "--source-file",
                                               source, environment: ["BUILDD_CONFIG": file])
            #expect(submitted.status == 0, "\(submitted)")
            let id = try #require(Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            let digest = try #require(try await farm.store.sourceFile(buildID: id, name: "hello_1.0.dsc"))
            #expect(FileManager.default.fileExists(atPath: try ArtifactStore(root: farm.artifactRoot).path(sha256: digest.sha256)))
        }
    }

    @Test func processorAddIsAllOrNothingAndNamesTheQueueTypeSetting() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            // The first declaration makes the farm's queues quorum (as deploy/rabbitmq/definitions.json does).
            let quorum = try await farm.cli("processor", "add", "amd64", environment: ["BUILDD_QUEUE_TYPE": "quorum"])
            #expect(quorum.status == 0 && quorum.output.contains("quorum"), "\(quorum)")
            // A command that would declare classic queues is refused by the broker, says which setting to
            // change, and leaves no processor behind.
            let classic = try await farm.cli("processor", "add", "arm64", "--queue-type", "classic")
            #expect(classic.status == 1, "\(classic)")
            #expect(classic.error.contains("x-queue-type") && classic.error.contains("BUILDD_QUEUE_TYPE"), "\(classic.error)")
            #expect(try await farm.store.processorNames() == ["amd64"], "a refused declaration adds no processor")
            let unknown = try await farm.cli("processor", "add", "arm64", "--queue-type", "stream")
            #expect(unknown.status == 64 && unknown.error.contains("classic, quorum"), "\(unknown)")
            // Same type: done, and the queue is there.
            #expect(try await farm.cli("processor", "add", "arm64", "--queue-type", "quorum").status == 0)
            #expect(try await farm.store.processorNames().sorted() == ["amd64", "arm64"])
            let queue = try await farm.vhost.queueArguments("buildd.jobs.arm64")
            #expect(queue["x-queue-type"] as? String == "quorum", "\(queue)")
        }
    }

    @Test func statusCountsLiveBuildsUnlessAskedForHistory() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            let waiting = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                   sourceName: "waits", sourceVersion: "1.0"))
            let gone = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                sourceName: "gone", sourceVersion: "1.0"))
            #expect(try await farm.store.cancel(gone) == .cancelled)
            func builds(_ arguments: String...) async throws -> [String: Int] {
                let run = try await FarmHarness.run(try TestEnvironment.binDirectory + "/buildd-master",
                                                    ["status", "--json"] + arguments, environment: [
                    "BUILDD_DATABASE_URL": farm.database.url, "BUILDD_CONFIG": "/dev/null"])
                #expect(run.status == 0, "\(run)")
                let report = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
                return report?["builds"] as? [String: Int] ?? [:]
            }
            #expect(try await builds() == ["NEEDSBUILD": 1], "live builds only: \(waiting) waits")
            #expect(try await builds("--finished") == ["NEEDSBUILD": 1, "CANCELLED": 1])
            // The statement behind the default view reads the live queue and looks builds up by key instead of
            // reading the table's history (with sequential scans off: on a table this small the planner would
            // rightly prefer one).
            let url = farm.database.url
            let plan = try await runBlocking {
                let connection = try PostgresConnection(url: url)
                _ = try connection.execute("SET enable_seqscan = off")
                return try connection.query("EXPLAIN " + BuilddStore.buildCountsSQL(includingFinished: false)).rows
                    .map { $0["QUERY PLAN"] ?? "" }.joined(separator: "\n")
            }
            #expect(plan.contains("build_pkey") && !plan.contains("Seq Scan"), "\(plan)")
        }
    }
}
