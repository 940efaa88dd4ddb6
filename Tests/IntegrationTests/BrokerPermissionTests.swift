import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// A build machine with valid credentials gets only its own jobs: an agent enrolled by
/// deploy/rabbitmq/enrol-agent, logged in with its real password, tries every way it could reach other
/// builders' jobs or the farm's queues, and the broker refuses each; then both machines build as before.
@Suite(.serialized, .timeLimit(.minutes(5))) struct BrokerPermissionTests {
    /// Runs one operation as `configuration`'s user on a fresh connection; the broker's refusal, if any.
    static func attempt(_ configuration: AMQPConfiguration,
                        _ operation: @escaping @Sendable (AMQPConnection) throws -> Void) async throws -> AMQPError? {
        try await runBlocking {
            let connection = try AMQPConnection(configuration: configuration)
            defer { connection.close() }
            try connection.openChannel(1)
            do {
                try operation(connection)
                // A refused consume or publish may arrive after the call returned: ask the channel once more.
                _ = try connection.declareQueue(BrokerTopology.controlQueue(builder: "arm-box"), passive: true)
                return nil
            } catch let error as AMQPError {
                return error
            }
        }
    }

    @Test func anEnrolledAgentCanReachOnlyItsOwnQueues() async throws {
        let farm = try await FarmHarness.make(tls: true)
        let users = ["arm-box", "amd-box"]
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64", "arm64"])
            try await farm.store.addBuilder(name: "arm-box", processors: ["arm64"], brokerUser: "arm-box")
            try await farm.store.addBuilder(name: "amd-box", processors: ["amd64"], brokerUser: "amd-box")
            try await farm.startMaster()
            let management = try TestEnvironment.managementURL
            for (name, processor) in [("arm-box", "arm64"), ("amd-box", "amd64")] {
                let enrolled = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"),
                                                         [name, processor], environment: [
                    "BUILDD_MANAGEMENT_URL": management, "BUILDD_VHOST": farm.vhost.name,
                    "BUILDD_AGENT_PASSWORD": "pw-\(name)",
                ])
                #expect(enrolled.status == 0, "\(enrolled)")
            }
            defer { Task { await OperationsTests.deleteUsers(users) } }
            // The master declares every queue, the agents' control queues too.
            #expect(try await eventually {
                let control = try await farm.vhost.queueExists(BrokerTopology.controlQueue(builder: "amd-box"))
                let jobs = try await farm.vhost.queueExists(BrokerTopology.jobQueue(processor: "amd64"))
                return control && jobs
            })

            let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "arm-box:pw-arm-box@")
            let arm = try AMQPConfiguration(url: url, connectionName: "arm-box-tries")
            let own = BrokerTopology.controlQueue(builder: "arm-box")
            let tries: [(String, @Sendable (AMQPConnection) throws -> Void)] = [
                ("bind its queue to another processor's jobs", {
                    try $0.bindQueue(own, exchange: BrokerTopology.jobsExchange, routingKey: "amd64") }),
                ("bind its queue to another builder's control key", {
                    try $0.bindQueue(own, exchange: BrokerTopology.controlExchange, routingKey: "amd-box") }),
                ("bind its own processor's queue anew", {
                    try $0.bindQueue(BrokerTopology.jobQueue(processor: "arm64"), exchange: BrokerTopology.jobsExchange,
                                     routingKey: "amd64") }),
                ("delete its processor's job queue", { try $0.deleteQueue(BrokerTopology.jobQueue(processor: "arm64")) }),
                ("delete another processor's job queue", { try $0.deleteQueue(BrokerTopology.jobQueue(processor: "amd64")) }),
                ("consume another processor's jobs", {
                    try $0.consume(queue: BrokerTopology.jobQueue(processor: "amd64"), channel: 1) }),
                ("consume another builder's control queue", {
                    try $0.consume(queue: BrokerTopology.controlQueue(builder: "amd-box"), channel: 1) }),
                ("take one message from another builder's control queue", {
                    _ = try $0.get(queue: BrokerTopology.controlQueue(builder: "amd-box"), channel: 1) }),
                ("declare a queue of its own", { _ = try $0.declareQueue("buildd.sneaky") }),
                ("publish a job", {
                    try $0.publish(exchange: BrokerTopology.jobsExchange, routingKey: "amd64", body: Array("{}".utf8),
                                   properties: MessageProperties(userID: "arm-box"), channel: 1) }),
                ("publish an event as another builder", {
                    try $0.publish(exchange: BrokerTopology.statusExchange, routingKey: "amd-box.finished",
                                   body: Array("{}".utf8), properties: MessageProperties(userID: "arm-box"), channel: 1) }),
                ("publish a control message", {
                    try $0.publish(exchange: BrokerTopology.controlExchange, routingKey: "amd-box", body: Array("{}".utf8),
                                   properties: MessageProperties(userID: "arm-box"), channel: 1) }),
            ]
            for (what, operation) in tries {
                let refusal = try await Self.attempt(arm, operation)
                #expect(refusal?.code == 403, "\(what): \(refusal.map { "\($0)" } ?? "allowed")")
            }
            // What it may do: check and consume its own queues.
            let consumeOwn = try await Self.attempt(arm) { try $0.consume(queue: own, channel: 1) }
            #expect(consumeOwn == nil, "\(String(describing: consumeOwn))")
            let consumeJobs = try await Self.attempt(arm) {
                try $0.consume(queue: BrokerTopology.jobQueue(processor: "arm64"), channel: 1)
            }
            #expect(consumeJobs == nil, "\(String(describing: consumeJobs))")

            // Both machines, with their own credentials, build as before.
            for (name, processor) in [("arm-box", "arm64"), ("amd-box", "amd64")] {
                try farm.startAgent(name, processors: [processor], sampleSeconds: 0.2,
                                    brokerUser: (name, "pw-\(name)"))
            }
            var builds: [Int64] = []
            for tag in ["amd64", "arm64"] {
                builds.append(try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: tag,
                                                                       sourceName: "hello-\(tag)", sourceVersion: "1.0")))
            }
            #expect(try await eventually(timeout: .seconds(60)) {
                var done = true
                for id in builds where try await farm.store.build(id).build.status != .fullyBuilt { done = false }
                return done
            }, "both builds end FULLYBUILT: \(farm.log("arm-box").suffix(2000))")
            let byBuilder = try await builds.asyncMap { try await farm.store.build($0).build.builder }
            #expect(byBuilder == ["amd-box", "arm-box"], "each on its own processor's builder")
        }
    }

    /// Any builder of a processor may read that processor's jobs, so a job carries no secret. A machine
    /// enrolled for amd64, with its real credentials, reads a job and puts it back, then tries what it
    /// learnt on the build another builder accepted: fetch its sources, upload into it (with keys of its
    /// own, and after declaring one in an accept of its own), and report for that builder. Each is
    /// refused, and the build ends as the builder that accepted it made it.
    @Test func aBuilderThatReadAJobCannotReachTheBuildAnotherBuilderAccepted() async throws {
        let farm = try await FarmHarness.make(tls: true)
        let users = ["amd-good", "amd-evil"]
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            for name in users { try await farm.store.addBuilder(name: name, processors: ["amd64"], brokerUser: name) }
            try await farm.startMaster(acceptTimeout: 60)
            let management = try TestEnvironment.managementURL
            for name in users {
                let enrolled = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"),
                                                         [name, "amd64"], environment: [
                    "BUILDD_MANAGEMENT_URL": management, "BUILDD_VHOST": farm.vhost.name,
                    "BUILDD_AGENT_PASSWORD": "pw-\(name)",
                ])
                #expect(enrolled.status == 0, "\(enrolled)")
            }
            defer { Task { await OperationsTests.deleteUsers(users) } }
            let jobQueue = BrokerTopology.jobQueue(processor: "amd64")
            #expect(try await eventually {
                let own = try await farm.vhost.queueExists(BrokerTopology.controlQueue(builder: "amd-evil"))
                return try await farm.vhost.queueExists(jobQueue) && own
            })
            try FileManager.default.createDirectory(atPath: farm.artifactRoot, withIntermediateDirectories: true)
            let sourcePath = farm.directory + "/secret_1.0.dsc"
            try Data("Source: secret\nVersion: 1.0\n".utf8).write(to: URL(fileURLWithPath: sourcePath))
            let source = try ArtifactStore(root: farm.artifactRoot).importFile(at: sourcePath, name: "secret_1.0.dsc")

            // The evil machine says it is idle, so the master publishes a job; it reads the job and puts it back.
            let evil = try AMQPConfiguration(
                url: farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "amd-evil:pw-amd-evil@"),
                connectionName: "amd-evil")
            @Sendable func publishAsEvil(_ event: AgentEvent) async throws {
                try await runBlocking {
                    let connection = try AMQPConnection(configuration: evil)
                    defer { connection.close() }
                    try connection.openChannel(1)
                    try connection.publish(exchange: BrokerTopology.statusExchange,
                                           routingKey: BrokerTopology.statusRoutingKey(builder: event.builder,
                                                                                       event: event.kind.rawValue),
                                           body: WireCodec.encode(event), properties: MessageProperties(userID: "amd-evil"),
                                           channel: 1)
                }
            }
            try await publishAsEvil(AgentEvent(kind: .hello, builder: "amd-evil", session: "evil", seq: 1, state: .idle,
                                               processors: ["amd64"]))
            let id = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "secret", sourceVersion: "1.0",
                                                              sourceFiles: [source]))
            let read: JobMessage? = try await runBlocking {
                let connection = try AMQPConnection(configuration: evil)
                defer { connection.close() }
                try connection.openChannel(1)
                for _ in 0..<200 {
                    if let delivery = try connection.get(queue: jobQueue, channel: 1) {
                        try connection.reject(deliveryTag: delivery.deliveryTag, requeue: true, channel: 1)
                        return try WireCodec.decodeJob(delivery.body)
                    }
                    usleep(50_000)
                }
                return nil
            }
            let job = try #require(read, "the evil machine reads its processor's job")
            #expect(job.buildID == id)
            let text = String(decoding: WireCodec.encode(job), as: UTF8.self)
            #expect(!text.contains("token") && !text.contains("key"), "the job carries no secret: \(text)")

            // The honest machine takes the job and builds it.
            try farm.startAgent("amd-good", processors: ["amd64"], sampleSeconds: 6, brokerUser: ("amd-good", "pw-amd-good"))
            #expect(try await eventually(timeout: .seconds(30)) {
                let build = try await farm.store.build(id).build
                return build.status == .building && build.builder == "amd-good"
            }, "the honest machine accepted the build: \(farm.log("amd-good").suffix(1500))")

            let base = farm.masterURLs[0]
            let sourceURL = "\(base)/v1/builds/\(id)/attempts/\(job.attempt)/sources/secret_1.0.dsc"
            let content = Array("Package: secret\n".utf8)
            @Sendable func send(_ method: String, _ url: String, _ headers: [String: String], _ body: [UInt8] = [])
                async throws -> Int {
                try await runBlocking {
                    try SimpleHTTPClient.send(method: method, url: url, headers: headers,
                                              body: body.isEmpty ? .none : .bytes(body), timeoutSeconds: 10,
                                              trust: farm.trust).status
                }
            }
            func tryKey(_ key: String, _ what: String) async throws {
                #expect(try await send("GET", sourceURL, ["Authorization": "Bearer \(key)"]) == 403, "source, \(what)")
                let basic = Data("buildd:\(key)".utf8).base64EncodedString()
                #expect(try await send("GET", sourceURL, ["Authorization": "Basic \(basic)"]) == 403,
                        "source as launchpad-buildd would ask, \(what)")
                #expect(try await send("PUT", job.uploadURL + "secret_1.0_amd64.deb?kind=result", [
                    "Authorization": "Bearer \(key)", "X-Checksum-Sha256": SHA256.hex(of: content),
                    "Content-Type": "application/octet-stream",
                ], content) == 403, "upload, \(what)")
            }
            try await tryKey(randomHexToken(bytes: 32), "with a key of its own")
            // It declares a key of its own in an accept of the same attempt: the build is the honest machine's,
            // so that accept is refused (and the evil machine told to abort), and its key opens nothing.
            let evilKey = randomHexToken(bytes: 32)
            try await publishAsEvil(AgentEvent(kind: .accepted, builder: "amd-evil", session: "evil", seq: 2,
                                               state: .building, buildID: id, attempt: job.attempt,
                                               uploadKeySHA256: SHA256.hex(of: evilKey)))
            let abort: ControlMessage? = try await runBlocking {
                let connection = try AMQPConnection(configuration: evil)
                defer { connection.close() }
                try connection.openChannel(1)
                for _ in 0..<200 {
                    if let delivery = try connection.get(queue: BrokerTopology.controlQueue(builder: "amd-evil"), channel: 1) {
                        try connection.ack(deliveryTag: delivery.deliveryTag, channel: 1)
                        return try WireCodec.decodeControl(delivery.body)
                    }
                    usleep(50_000)
                }
                return nil
            }
            #expect(abort?.command == .abort && abort?.buildID == id, "its accept was refused: \(String(describing: abort))")
            try await tryKey(evilKey, "with the key its own accept declared")
            #expect(try await farm.store.build(id).build.builder == "amd-good")

            // The build ends as the honest machine made it, with its files only.
            #expect(try await eventually(timeout: .seconds(60)) {
                try await farm.store.build(id).build.status == .fullyBuilt
            }, "\(farm.log("amd-good").suffix(2000))")
            let files = try await farm.store.database.query(
                "SELECT name, sha256 FROM build_file WHERE build_id = $1 AND kind = 'result'", [id]).rows
            let stored = try files.map { try $0.string("name") }.sorted()
            #expect(stored == ["secret_1.0_amd64.buildinfo", "secret_1.0_amd64.deb"], "the honest machine's results")
            #expect(try !files.map { try $0.string("sha256") }.contains(SHA256.hex(of: content)),
                    "none of the evil machine's bytes")
            let refusals = try await farm.metricsText().split(separator: "\n")
                .filter { $0.hasPrefix("buildd_http_refused_total") && $0.contains("token_refused") }
            #expect(refusals.count == 2, "source and upload refusals are counted: \(refusals)")
        }
    }

    @Test func aFloodOfRefusedMessagesCostsBoundedLogLinesAndMarksTheBuilderNotOk() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "noisy", processors: ["amd64"], brokerUser: "noisy")
            try await farm.startMaster()
            let enrolled = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"), ["noisy", "amd64"],
                                                     environment: ["BUILDD_MANAGEMENT_URL": try TestEnvironment.managementURL,
                                                                   "BUILDD_VHOST": farm.vhost.name, "BUILDD_AGENT_PASSWORD": "pw"])
            #expect(enrolled.status == 0, "\(enrolled)")
            defer { Task { await OperationsTests.deleteUsers(["noisy"]) } }
            let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "noisy:pw@")
            let configuration = try AMQPConfiguration(url: url, connectionName: "noisy")
            let count = NoiseRule.floodPerMinute + 20
            try await runBlocking {
                let connection = try AMQPConnection(configuration: configuration)
                defer { connection.close() }
                try connection.openChannel(1)
                for _ in 0..<count {
                    try connection.publish(exchange: BrokerTopology.statusExchange, routingKey: "noisy.heartbeat",
                                           body: Array("{not json".utf8), properties: MessageProperties(userID: "noisy"),
                                           channel: 1)
                }
            }
            #expect(try await eventually(timeout: .seconds(30)) {
                try await farm.vhost.messageCount(queue: BrokerTopology.deadLetterQueue) == count
            }, "every refused message is dead-lettered")
            let text = try await farm.metricsText()
            #expect(metricSample(text, "buildd_messages_rejected_total", ["reason": "malformed"]) == Double(count),
                    "every one is counted")
            let lines = farm.log("master").split(separator: "\n").filter { $0.contains("msg=\"event dead-lettered\"") }
            #expect(lines.count == NoiseRule.linesPerMinute, "\(lines.count) lines for \(count) refusals")
            let builder = try #require(try await farm.store.builders().first { $0.name == "noisy" })
            #expect(!builder.builderok && builder.failnotes?.contains("refused messages within a minute") == true,
                    "\(builder)")
            let history = try await farm.store.builderHistory("noisy")
            #expect(history.first?.kind == "failed")
        }
    }
}
