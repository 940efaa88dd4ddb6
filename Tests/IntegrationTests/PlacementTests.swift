import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Placement on real services: a build goes only to a builder that may take it (Launchpad's rules,
/// ``Placement``), whatever it asks for and however its job is routed, and a waiting build says why.
@Suite(.serialized, .timeLimit(.minutes(5))) struct PlacementTests {
    static func request(_ source: String, constraints: Set<String> = [], virtualized: Bool = true,
                        archive: ArchivePurpose = .primary, urgency: Urgency = .medium) -> BuildRequest {
        var request = BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: source,
                                   sourceVersion: "1.0", urgency: urgency, archive: archive)
        request.constraints = constraints
        request.virtualized = virtualized
        return request
    }

    /// A gpu build (and a build asking for an open resource) wait while a plain builder idles, saying why,
    /// and never reach it; once the builders that offer them are up, each runs there. A builder keeping
    /// gpu restricted never takes a plain build; one offering an open resource takes plain builds too.
    @Test func aBuildOnlyAGPUBuilderMayTakeWaitsWhileOthersIdleThenRunsThere() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "plain-1", processors: ["amd64"], brokerUser: "guest")
            // The operator's commands, as an operator types them.
            let gpu = try await farm.cli("builder", "add", "gpu-1", "--processor", "amd64", "--broker-user", "guest",
                                         "--restricted-resources", "gpu")
            #expect(gpu.status == 0 && gpu.output.contains("virtualized, restricted gpu"), "\(gpu)")
            let big = try await farm.cli("builder", "add", "big-1", "--processor", "amd64", "--broker-user", "guest")
            #expect(big.status == 0, "\(big)")
            let set = try await farm.cli("builder", "set", "big-1", "--resources", "large")
            #expect(set.status == 0 && set.output.contains("resources large"), "\(set)")
            let history = try await farm.cli("builder", "history", "big-1")
            #expect(history.output.contains("placement") && history.output.contains("resources large"), "\(history)")
            let bad = try await farm.cli("builder", "set", "big-1", "--resources", "Large Disk")
            #expect(bad.status != 0 && bad.error.contains("invalid resource"), "\(bad)")
            try await farm.startMaster()
            try farm.startAgent("plain-1", processors: ["amd64"])

            // The gpu and large builds score above the plain ones: a plain builder that took by score alone
            // would take them first.
            let gpuBuild = try await store.submit(Self.request("needs-gpu", constraints: ["gpu"], urgency: .emergency))
            let largeBuild = try await store.submit(Self.request("needs-large", constraints: ["large"], urgency: .emergency))
            let fpgaBuild = try await store.submit(Self.request("needs-fpga", constraints: ["fpga"], urgency: .emergency))
            var plain: [Int64] = []
            for index in 0..<3 { plain.append(try await store.submit(Self.request("plain\(index)"))) }
            #expect(try await eventually(timeout: .seconds(60)) {
                var done = true
                for id in plain where try await store.build(id).build.status != .fullyBuilt { done = false }
                return done
            }, "the plain builds end on the plain builder: \(farm.log("master").suffix(2000))")
            // The plain builder is idle now, and the gpu build still waits, never dispatched.
            try await Task.sleep(for: .seconds(3))
            let waiting = try await store.build(gpuBuild)
            #expect(waiting.build.status == .needsBuild && waiting.build.attempt == 0, "\(waiting.history)")
            #expect(waiting.requirements == BuildRequirements(virtualized: true, constraints: ["gpu"]))
            #expect(waiting.waitingBecause == "none of the 1 builder(s) that may take it is idle (1 offline)",
                    "\(String(describing: waiting.waitingBecause))")
            let fpga = try await store.build(fpgaBuild)
            #expect(fpga.waitingBecause == "no builder of amd64 may take it: the builder does not offer fpga (3 of 3)",
                    "\(String(describing: fpga.waitingBecause))")
            let queue = try await store.queue(processor: "amd64")
            #expect(queue.first { $0.id == fpgaBuild }?.waitingBecause == fpga.waitingBecause, "the queue says why too")
            let shown = try await farm.cli("build", "show", "\(fpgaBuild)")
            #expect(shown.output.contains("needs:     virtualized, constraints fpga")
                    && shown.output.contains("waiting:   no builder of amd64 may take it"), "\(shown)")
            for id in plain { #expect(try await store.build(id).build.builder == "plain-1") }

            // The builders that offer them come up, taking only what is addressed to them.
            try farm.startAgent("gpu-1", processors: ["amd64"], agentSettings: "shared_queue = false")
            try farm.startAgent("big-1", processors: ["amd64"], agentSettings: "shared_queue = false")
            #expect(try await eventually(timeout: .seconds(60)) {
                let gpu = try await store.build(gpuBuild).build, large = try await store.build(largeBuild).build
                return gpu.status == .fullyBuilt && large.status == .fullyBuilt
            }, "gpu-1: \(farm.log("gpu-1").suffix(1500))\nmaster: \(farm.log("master").suffix(2000))")
            #expect(try await store.build(gpuBuild).build.builder == "gpu-1")
            #expect(try await store.build(largeBuild).build.builder == "big-1")
            #expect(try await store.build(gpuBuild).build.attempt == 1, "dispatched once, to the builder that took it")

            // Plain builds go to the plain builder and to the builder with an open resource, never to the gpu one.
            var more: [Int64] = []
            for index in 0..<8 { more.append(try await store.submit(Self.request("more\(index)"))) }
            #expect(try await eventually(timeout: .seconds(90)) {
                var done = true
                for id in more where try await store.build(id).build.status != .fullyBuilt { done = false }
                return done
            }, "\(farm.log("master").suffix(2000))")
            var builders: [String: Int] = [:]
            for id in more { builders[try await store.build(id).build.builder ?? "-", default: 0] += 1 }
            #expect(builders["gpu-1"] == nil, "the gpu builder keeps gpu for the builds that ask for it: \(builders)")
            #expect(builders.keys.allSatisfy { ["plain-1", "big-1"].contains($0) }, "\(builders)")
            #expect(try await store.build(fpgaBuild).build.status == .needsBuild)
            #expect(!farm.log("gpu-1").contains("addressed job dropped"))
        }
    }

    /// A private build requires a virtualized builder: with only a non-virtualized one it waits and says
    /// why; that builder's broker user may not read the shared job queue; an accept of the private build's
    /// attempt from it (real credentials, its own key) is refused and the build does not start there; a
    /// virtualized builder then builds it. The non-virtualized builder builds what does not require it.
    @Test func aPrivateBuildNeverReachesANonVirtualizedBuilder() async throws {
        let farm = try await FarmHarness.make()
        let users = ["bare-1"]
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "bare-1", processors: ["amd64"], brokerUser: "bare-1",
                                       placement: BuilderPlacement(virtualized: false))
            try await farm.startMaster(acceptTimeout: 60)
            let enrolled = try await FarmHarness.run(FarmHarness.repositoryFile("deploy/rabbitmq/enrol-agent"),
                                                     ["--addressed", "bare-1", "amd64"], environment: [
                "BUILDD_MANAGEMENT_URL": try TestEnvironment.managementURL, "BUILDD_VHOST": farm.vhost.name,
                "BUILDD_AGENT_PASSWORD": "pw-bare-1",
            ])
            #expect(enrolled.status == 0, "\(enrolled)")
            defer { Task { await OperationsTests.deleteUsers(users) } }
            try farm.startAgent("bare-1", processors: ["amd64"], agentSettings: "shared_queue = false",
                                brokerUser: ("bare-1", "pw-bare-1"))

            // What does not require virtualization runs on it.
            let trusted = try await store.submit(Self.request("trusted", virtualized: false))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(trusted).build.status == .fullyBuilt
            }, "\(farm.log("bare-1").suffix(1500))\n\(farm.log("master").suffix(1500))")
            #expect(try await store.build(trusted).build.builder == "bare-1")

            // A private build asks for no virtualization and gets it all the same.
            let secret = try await store.submit(Self.request("secret", virtualized: false, archive: .private))
            try await Task.sleep(for: .seconds(2))
            let waiting = try await store.build(secret)
            #expect(waiting.requirements?.virtualized == true)
            #expect(waiting.build.status == .needsBuild && waiting.build.attempt == 0)
            #expect(waiting.waitingBecause
                    == "no builder of amd64 may take it: the build requires a virtualized builder (1 of 1)",
                    "\(String(describing: waiting.waitingBecause))")

            // Its broker user may not read the shared job queue, where the private build's job would go.
            let bare = try AMQPConfiguration(
                url: farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "bare-1:pw-bare-1@"),
                connectionName: "bare-1-tries")
            let refused = try await BrokerPermissionTests.attempt(bare) {
                _ = try $0.get(queue: BrokerTopology.jobQueue(processor: "amd64"), channel: 1)
            }
            #expect(refused?.code == 403, "\(String(describing: refused))")

            // The build is claimed as the shared queue's claim would (no builder may take it, so no claim
            // does); the non-virtualized builder accepts that attempt with its own credentials and key:
            // refused, it does not start there.
            let attempt = Int32(try #require(try await store.database.query("""
                WITH bumped AS (UPDATE build SET attempt = attempt + 1 WHERE id = $1 RETURNING attempt)
                UPDATE buildqueue SET state = 'DISPATCHED', dispatched_at = now() WHERE build_id = $1
                RETURNING (SELECT attempt FROM bumped)
                """, [secret]).first).int("attempt"))
            let accepted = AgentEvent(kind: .accepted, builder: "bare-1", session: "forged", seq: 1, state: .building,
                                      buildID: secret, attempt: attempt,
                                      uploadKeySHA256: SHA256.hex(of: randomHexToken(bytes: 32)))
            try await runBlocking {
                let connection = try AMQPConnection(configuration: bare)
                defer { connection.close() }
                try connection.openChannel(1)
                try connection.publish(exchange: BrokerTopology.statusExchange,
                                       routingKey: BrokerTopology.statusRoutingKey(builder: "bare-1", event: "accepted"),
                                       body: WireCodec.encode(accepted), properties: MessageProperties(userID: "bare-1"),
                                       channel: 1)
            }
            #expect(try await eventually(timeout: .seconds(20)) {
                farm.log("master").contains("the build requires a virtualized builder")
            }, "the master refused the accept: \(farm.log("master").suffix(2000))")
            let after = try await store.build(secret)
            #expect(after.build.status == .needsBuild && after.build.builder == nil, "\(after.history)")
            #expect(!after.history.contains { $0.builder == "bare-1" }, "\(after.history)")

            // A virtualized builder comes; the claim is put back, and it builds the private build.
            try await store.releaseClaim(buildID: secret, attempt: attempt)
            try await store.addBuilder(name: "virt-1", processors: ["amd64"], brokerUser: "guest")
            try farm.startAgent("virt-1", processors: ["amd64"])
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(secret).build.status == .fullyBuilt
            }, "\(farm.log("virt-1").suffix(1500))\n\(farm.log("master").suffix(1500))")
            let built = try await store.build(secret)
            #expect(built.build.builder == "virt-1")
            #expect(!built.history.contains { $0.builder == "bare-1" }, "\(built.history)")
        }
    }
}
