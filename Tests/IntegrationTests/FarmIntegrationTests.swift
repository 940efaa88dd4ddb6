import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// End to end: real master and agent processes, real PostgreSQL and RabbitMQ.
@Suite(.serialized, .timeLimit(.minutes(5))) struct FarmIntegrationTests {
    struct Sample {
        let source: String
        let processor: String
        let urgency: Urgency
        let pocket: Pocket
        let expected: BuildStatus
        var score: Int { Scoring.score(urgency: urgency, pocket: pocket, component: .main) }
    }

    static let samples: [Sample] = {
        var samples: [Sample] = []
        let urgencies: [Urgency] = [.low, .medium, .high, .emergency]
        let pockets: [Pocket] = [.release, .updates, .security, .backports, .proposed]
        for index in 0..<20 {
            let processor = index % 5 < 3 ? "amd64" : "arm64"
            var source = "pkg\(index)"
            var expected = BuildStatus.fullyBuilt
            if index == 4 || index == 13 { source += "-broken"; expected = .failedToBuild }
            if index == 7 { source += "-depwait"; expected = .manualDepWait }
            samples.append(Sample(source: source, processor: processor, urgency: urgencies[index % 4],
                                  pocket: pockets[index % 5], expected: expected))
        }
        return samples
    }()

    @Test func twentyBuildsOverTwoProcessorsReachTheirFinalStates() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64", "arm64"])
            try await store.addBuilder(name: "agent-a1", processors: ["amd64"], brokerUser: "guest")
            try await store.addBuilder(name: "agent-a2", processors: ["amd64"], brokerUser: "guest")
            try await store.addBuilder(name: "agent-b1", processors: ["arm64"], brokerUser: "guest")
            try await farm.startMaster()

            // Everything is queued before any agent is up, so dispatch order shows the scoring.
            var expected: [Int64: Sample] = [:]
            for sample in Self.samples {
                let id = try await store.submit(BuildRequest(
                    distribution: "ubuntu", series: "noble", archTag: sample.processor, sourceName: sample.source,
                    sourceVersion: "1.0-1", urgency: sample.urgency, pocket: sample.pocket))
                expected[id] = sample
            }
            try farm.startAgent("agent-a1", processors: ["amd64"])
            try farm.startAgent("agent-a2", processors: ["amd64"])
            try farm.startAgent("agent-b1", processors: ["arm64"])

            let quiet = try await farm.waitForQuiet(timeout: .seconds(180))
            #expect(quiet, "builds still active; master log:\n\(farm.log("master"))")

            // Every build reached the state it should.
            for (id, sample) in expected.sorted(by: { $0.key < $1.key }) {
                let detail = try await store.build(id)
                #expect(detail.build.status == sample.expected, "build \(id) \(sample.source)")
                // Nothing went wrong on the way: no retry, no failure counted.
                #expect(detail.build.attempt == 1 && detail.build.failureCount == 0, "build \(id) was retried")
                let logs = detail.files.filter { $0.kind == "log" }
                #expect(logs.count == 1, "build \(id) keeps exactly one log")
                let results = detail.files.filter { $0.kind == "result" }.map(\.name).sorted()
                if sample.expected == .fullyBuilt {
                    #expect(results == ["\(sample.source)_1.0-1_\(sample.processor).buildinfo",
                                        "\(sample.source)_1.0-1_\(sample.processor).deb"])
                } else {
                    #expect(results.isEmpty)
                }
                if sample.expected == .failedToBuild, let log = logs.first {
                    let text = try String(contentsOfFile: farm.artifactRoot + "/sha256/\(log.sha256.prefix(2))/\(log.sha256)",
                                          encoding: .utf8)
                    #expect(text.contains("compilation failed"), "the failed build's log is kept")
                }
            }

            // Every stored file's recorded sha256 and size match the bytes on disk.
            let files = try await store.database.query("SELECT sha256, size FROM build_file").rows
            #expect(files.count >= 20)
            for file in files {
                let sha256 = try file.string("sha256")
                let data = try Data(contentsOf: URL(fileURLWithPath: farm.artifactRoot + "/sha256/\(sha256.prefix(2))/\(sha256)"))
                #expect(SHA256.hex(of: data) == sha256)
                #expect(Int64(data.count) == (try file.int64("size")))
            }

            try await checkInvariants(store, builds: expected.count)
            try await checkDispatchOrder(store, processors: expected.mapValues { ($0.processor, $0.score) })

            // Each agent's hello announced its release and capabilities, which the builder keeps for operators
            // following a rolling upgrade.
            for builder in try await store.builders() {
                #expect(builder.agentRelease == BuilddRelease.version, "\(builder.name)")
                #expect(builder.agentCapabilities == BuilddRelease.agentCapabilities, "\(builder.name)")
            }

            let statuses = await farm.stopAll()
            for (name, status) in statuses { #expect(status == 0, "\(name) did not stop cleanly on SIGTERM") }
        }
    }

    /// The shipped production settings: quorum queues (deploy/rabbitmq/definitions.json), and a master that
    /// publishes another spelling of its URL than the agent lists (`localhost` against `127.0.0.1`). Agents
    /// once asked quorum queues for a channel-wide prefetch, which RabbitMQ refuses, and compared URLs as
    /// strings: either alone kept every build from being built.
    @Test func quorumQueuesAndAMasterNamedOtherwiseThanTheAgentListsIt() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64", "arm64"])
            try await store.addBuilder(name: "quorum-1", processors: ["amd64", "arm64"], brokerUser: "guest")
            let port = try FarmHarness.freePort()
            try await farm.startMaster(port: port, arguments: ["--queue-type", "quorum",
                                                               "--public-url", "http://localhost:\(port)"])
            var ids: [Int64] = []
            for index in 0..<6 {
                ids.append(try await store.submit(BuildRequest(
                    distribution: "ubuntu", series: "noble", archTag: index % 2 == 0 ? "amd64" : "arm64",
                    sourceName: "quorum\(index)", sourceVersion: "1.0")))
            }
            // One agent of two processors: both queues offer it a job at once, it builds one at a time.
            try farm.startAgent("quorum-1", processors: ["amd64", "arm64"], sampleSeconds: 0.2, queueType: "quorum",
                                masters: ["http://127.0.0.1:\(port)"])
            let quiet = try await farm.waitForQuiet(timeout: .seconds(90))
            #expect(quiet, "agent log:\n\(farm.log("quorum-1"))")
            for id in ids {
                let detail = try await store.build(id)
                #expect(detail.build.status == .fullyBuilt, "build \(id): \(detail.build.status)")
                #expect(detail.files.contains { $0.kind == "log" }, "uploaded to the master by its other name")
            }
            let queue = try await farm.vhost.queueArguments("buildd.jobs.arm64")
            #expect(queue["x-queue-type"] as? String == "quorum")
            try await checkInvariants(store, builds: ids.count)
        }
    }
}
