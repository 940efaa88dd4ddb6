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
