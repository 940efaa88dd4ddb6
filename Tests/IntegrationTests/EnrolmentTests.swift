import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// A new build machine enrols itself with a join token (issue 26): no admin password on its command line;
/// it gets its builder, its own broker user with exactly the permissions `deploy/rabbitmq/enrol-agent` gives
/// (tried on the real broker), its configuration and password written with mode 0600; a one-shot agent from
/// that configuration takes one build and exits. A reused, an expired and an unknown join token are each
/// refused with nothing enrolled.
@Suite(.serialized, .timeLimit(.minutes(5))) struct EnrolmentTests {
    static func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }

    /// A farm over HTTPS whose master enrols machines through the test broker's management API (its URL is
    /// `body`'s second argument), with `processors`; the broker users `users` are deleted afterwards.
    static func withEnrollingMaster(processors: [String], users: [String],
                                    _ body: (FarmHarness, String) async throws -> Void) async throws {
        let farm = try await FarmHarness.make(tls: true)
        defer { Task { await OperationsTests.deleteUsers(users) } }
        try await closing(farm) {
            try await farm.store.addNobleProcessors(processors)
            let management = try TestEnvironment.managementURL
            try await farm.startMaster(arguments: ["--broker-management-url", management])
            try await body(farm, management)
        }
    }

    @Test func aMachineEnrolsWithAJoinTokenOnceAndBuildsOneJob() async throws {
        let users = ["enrolled-1", "enrolled-2", "late-1", "guess-1", "scripted-1"]
        try await Self.withEnrollingMaster(processors: ["amd64", "arm64"], users: users) { farm, management in
            let ca = try #require(farm.tls?.ca)
            let master = farm.masterURLs[0]
            let agentBinary = try TestEnvironment.binDirectory + "/buildd-agent"

            // The operator's join token: one machine, amd64, an hour.
            let made = try await farm.cli("token", "add", "rack-4", "--role", "enrol", "--expires", "1h", "--processor", "amd64")
            #expect(made.status == 0, "\(made)")
            let token = made.output.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(token.hasPrefix("bdj_"))
            // It is no API token: the API refuses it.
            let asAPI = try await runBlocking { [trust = farm.trust] in
                try SimpleHTTPClient.send(method: "POST", url: master + "/v1/builders/x/enable",
                                          headers: ["authorization": "Bearer \(token)"], trust: trust)
            }
            #expect(asAPI.status == 403, "\(asAPI.text)")

            let sample = FarmHarness.repositoryFile("deploy/examples/sample-build")
            func enrol(_ name: String, _ token: String) async throws -> (status: Int32, output: String, error: String) {
                try await FarmHarness.run(agentBinary, [
                    "enrol", "--master", master, "--join-token", token, "--name", name, "--ca-file", ca,
                    "--config", farm.directory + "/\(name).conf", "--password-file", farm.directory + "/\(name).secret",
                    "--workdir", farm.directory + "/work-\(name)", "--build-user", "nobody",
                    "--command", "binarypackage=\(sample)",
                ])
            }
            let enrolled = try await enrol("enrolled-1", token)
            #expect(enrolled.status == 0, "\(enrolled)")
            let config = farm.directory + "/enrolled-1.conf", secret = farm.directory + "/enrolled-1.secret"
            #expect(try Self.mode(config) == 0o600)
            #expect(try Self.mode(secret) == 0o600)
            let password = try String(contentsOfFile: secret, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(password.count == 48)
            #expect(!(try String(contentsOfFile: config, encoding: .utf8)).contains(password), "the password is in its file alone")
            let check = try await FarmHarness.run(agentBinary, ["check-config", "-c", config])
            #expect(check.status == 0, "\(check)")
            let builder = try #require(try await farm.store.builders().first { $0.name == "enrolled-1" })
            #expect(builder.processors == ["amd64"])
            let history = try await farm.store.builderHistory("enrolled-1")
            #expect(history.contains { $0.kind == "added" && $0.actor == "join-token:rack-4" }, "\(history)")

            // The token is spent: a second machine with it is refused, and nothing of it is enrolled.
            let again = try await enrol("enrolled-2", token)
            #expect(again.status == 77, "\(again)")
            #expect(again.error.contains("was used already (it enrolled enrolled-1)"), "\(again.error)")
            // An expired token, and one never made.
            let short = try await farm.cli("token", "add", "rack-5", "--role", "enrol", "--expires", "1s", "--processor", "amd64")
            #expect(short.status == 0, "\(short)")
            try await Task.sleep(for: .milliseconds(1500))
            let late = try await enrol("late-1", short.output.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(late.status == 77 && late.error.contains("expired"), "\(late)")
            let guess = try await enrol("guess-1", "bdj_" + String(repeating: "0", count: 48))
            #expect(guess.status == 77 && guess.error.contains("join token refused"), "\(guess)")
            // `token list` shows who each join token enrolled, never a token.
            let listed = try await farm.cli("token", "list", "--json")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            let rack4 = rows.first { $0["name"] as? String == "rack-4" }
            #expect(rack4?["role"] as? String == "enrol" && rack4?["state"] as? String == "used"
                    && rack4?["used_by"] as? String == "enrolled-1", "\(listed.output)")
            #expect(rows.first { $0["name"] as? String == "rack-5" }?["state"] as? String == "expired")
            #expect(!listed.output.contains(token), "a join token is listed")
            let names = try await farm.store.builders().map(\.name)
            #expect(!names.contains("enrolled-2") && !names.contains("late-1") && !names.contains("guess-1"))
            for name in ["enrolled-2", "late-1", "guess-1"] {
                let user = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: management + "/api/users/\(name)") }
                #expect(user.status == 404, "no broker user for refused \(name)")
            }
            // A token for amd64 does not enrol an arm64 machine.
            let armToken = try await farm.cli("token", "add", "rack-6", "--role", "enrol", "--expires", "1h", "--processor", "amd64")
            let arm = try await FarmHarness.run(agentBinary, [
                "enrol", "--master", master, "--join-token", armToken.output.trimmingCharacters(in: .whitespacesAndNewlines),
                "--name", "enrolled-2", "--processor", "arm64", "--ca-file", ca,
                "--config", farm.directory + "/arm.conf", "--password-file", farm.directory + "/arm.secret",
            ])
            #expect(arm.status == 1 && arm.error.contains("not for arm64"), "\(arm)")

            // Exactly the permissions deploy/rabbitmq/enrol-agent gives a machine enrolled by hand.
            let scripted = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"),
                                                     ["scripted-1", "amd64"], environment: [
                "BUILDD_MANAGEMENT_URL": management, "BUILDD_VHOST": farm.vhost.name, "BUILDD_AGENT_PASSWORD": "pw"])
            #expect(scripted.status == 0, "\(scripted)")
            func permissions(_ user: String) async throws -> [String] {
                let vhost = farm.vhost.name
                let plain = try await runBlocking {
                    try SimpleHTTPClient.send(method: "GET", url: management + "/api/permissions/\(vhost)/\(user)").text
                }
                let topic = try await runBlocking {
                    try SimpleHTTPClient.send(method: "GET", url: management + "/api/topic-permissions/\(vhost)/\(user)").text
                }
                return [plain, topic].map { $0.replacingOccurrences(of: user, with: "USER") }
            }
            let fromEnrolment = try await permissions("enrolled-1")
            let fromScript = try await permissions("scripted-1")
            #expect(fromEnrolment == fromScript)
            // And the broker holds it to them, with its real password.
            let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "enrolled-1:\(password)@")
            let machine = try AMQPConfiguration(url: url, connectionName: "enrolled-tries")
            // The masters declare the new builder's control queue.
            #expect(try await eventually {
                try await farm.vhost.queueExists(BrokerTopology.controlQueue(builder: "enrolled-1"))
            })
            let own = BrokerTopology.controlQueue(builder: "enrolled-1")
            let tries: [(String, @Sendable (AMQPConnection) throws -> Void)] = [
                ("consume arm64's jobs", { try $0.consume(queue: BrokerTopology.jobQueue(processor: "arm64"), channel: 1) }),
                ("bind its queue to arm64's jobs", {
                    try $0.bindQueue(own, exchange: BrokerTopology.jobsExchange, routingKey: "arm64") }),
                ("publish as another builder", {
                    try $0.publish(exchange: BrokerTopology.statusExchange, routingKey: "scripted-1.finished",
                                   body: Array("{}".utf8), properties: MessageProperties(userID: "enrolled-1"), channel: 1) }),
                ("declare a queue", { _ = try $0.declareQueue("buildd.mine") }),
            ]
            for (what, operation) in tries {
                let refusal = try await BrokerPermissionTests.attempt(machine, operation)
                #expect(refusal?.code == 403, "\(what): \(refusal.map { "\($0)" } ?? "allowed")")
            }

            // Two builds wait and no builder is up: the queue is short of two amd64 builders.
            var builds: [Int64] = []
            for source in ["first", "second"] {
                builds.append(try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                       sourceName: source, sourceVersion: "1.0")))
            }
            let shortTwo = try await eventually {
                try await farm.metricsText().contains(#"buildd_builders_short{processor="amd64",constraints="virtualized"} 2"#)
            }
            let shortLines = try await farm.metricsText().split(separator: "\n").filter { $0.contains("short") }
            #expect(shortTwo, "\(shortLines)")

            // A one-shot agent from the written files: one build, then it exits 0.
            let agent = try farm.spawn("buildd-agent", ["run", "-c", config, "--one-shot"], log: farm.directory + "/enrolled-1.log",
                                       environment: ["BUILDD_SAMPLE_SECONDS": "0.2"])
            #expect(try await eventually(timeout: .seconds(60)) { !agent.isRunning }, "\(farm.log("enrolled-1"))")
            #expect(agent.terminationStatus == 0, "\(farm.log("enrolled-1"))")
            let statuses = try await builds.asyncMap { try await farm.store.build($0).build }
            #expect(statuses.filter { $0.status == .fullyBuilt && $0.builder == "enrolled-1" }.count == 1,
                    "\(statuses.map { "\($0.id) \($0.status) \($0.builder ?? "-")" })")
            #expect(statuses.contains { $0.status == .needsBuild }, "the other build waits for another machine")
            let after = try #require(try await farm.store.builders().first { $0.name == "enrolled-1" })
            #expect(after.agentRelease == BuilddRelease.version)
            #expect(after.agentCapabilities?.contains("one-shot") == true)
            let counted = try await farm.metricsText()
            #expect(counted.contains(#"buildd_enrolments_total{outcome="enrolled"} 1"#))
            #expect(counted.contains(#"buildd_enrolments_total{outcome="join_token_used"} 1"#))
        }
    }
}
