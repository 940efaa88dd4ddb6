import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The complete master's behaviour with real processes: ordering, cancellation, processors added live.
@Suite(.serialized, .timeLimit(.minutes(5))) struct MasterBehaviourTests {
    func farm(processors: [String] = ["amd64"]) async throws -> FarmHarness {
        let farm = try await FarmHarness.make()
        try await farm.store.addNobleProcessors(processors)
        return farm
    }

    func submit(_ farm: FarmHarness, _ source: String, processor: String = "amd64", urgency: Urgency = .medium,
                pocket: Pocket = .release, component: Component = .main) async throws -> Int64 {
        try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: processor,
                                                 sourceName: source, sourceVersion: "1.0", urgency: urgency,
                                                 pocket: pocket, component: component))
    }

    func waitFor(_ farm: FarmHarness, _ id: Int64, _ status: BuildStatus, timeout: Duration = .seconds(60)) async throws -> Bool {
        try await eventually(timeout: timeout, interval: .milliseconds(100)) {
            try await farm.store.build(id).build.status == status
        }
    }

    @Test func aHundredWaitingBuildsStartInScoreOrder() async throws {
        let farm = try await farm()
        try await closing(farm) {
            try await farm.store.addBuilder(name: "only", processors: ["amd64"])
            // The job published ahead for the busy agent waits for it as long as the busy build runs: the accept
            // timeout outlasts that, or the job is requeued and claimed again out of order.
            try await farm.startMaster(acceptTimeout: 60)
            // Keep the agent busy (a 40 s build) while the queue fills: on two busy cores 100 submits took more
            // than the 5 s this once gave, and in a clean-clone suite run more than 15 s.
            try farm.startAgent("only", processors: ["amd64"], sampleSeconds: 0.02,
                                environment: ["BUILDD_SAMPLE_SLOW_SECONDS": "40"])
            let busy = try await submit(farm, "busy-slow")
            #expect(try await waitFor(farm, busy, .building))
            var scores: [Int64: Int] = [:]
            let urgencies = Urgency.allCases, pockets = Pocket.allCases, components = Component.allCases
            for index in 0..<100 {
                let (urgency, pocket, component) = (urgencies[index % 4], pockets[(index / 4) % 5], components[(index / 3) % 5])
                let id = try await submit(farm, "p\(index)", urgency: urgency, pocket: pocket, component: component)
                scores[id] = Scoring.score(urgency: urgency, pocket: pocket, component: component)
            }
            #expect(try await farm.waitForQuiet(timeout: .seconds(240)), "builds still running")
            let started = try await farm.store.database.query("""
                SELECT build_id FROM build_event WHERE status = 'BUILDING' AND build_id <> $1 ORDER BY id
                """, [busy]).rows.map { try $0.int64("build_id") }
            let expected = scores.keys.sorted { (scores[$0]!, -$0) > (scores[$1]!, -$1) }
            #expect(started.count == 100)
            #expect(started == expected, "builds started out of score order")
            let first = try await farm.store.build(expected[0]).build.dateStarted ?? ""
            let busyEnd = try await farm.store.build(busy).build.dateFinished ?? "~"
            let lastSubmitted = try await farm.store.build(scores.keys.max()!).build.dateCreated
            #expect(lastSubmitted <= busyEnd && first >= busyEnd,
                    "the queue was still filling when the busy build ended (last submit \(lastSubmitted), busy end \(busyEnd))")
        }
    }

    @Test func cancellingARunningBuildAbortsItOnTheAgent() async throws {
        let farm = try await farm()
        try await closing(farm) {
            try await farm.store.addBuilder(name: "slow", processors: ["amd64"])
            try await farm.startMaster()
            try farm.startAgent("slow", processors: ["amd64"], sampleSeconds: 60)
            let id = try await submit(farm, "long")
            #expect(try await waitFor(farm, id, .building))
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try await farm.store.cancel(id) == .cancelling)
            #expect(try await waitFor(farm, id, .cancelled, timeout: .seconds(30)), "agent log:\n\(farm.log("slow"))")
            print("cancel of a running build took \(clock.now - start) from request to CANCELLED")
            let detail = try await farm.store.build(id)
            #expect(detail.build.result == "ABORTED")
            #expect(detail.files.contains { $0.kind == "log" }, "the aborted build's log is kept")
            #expect(try await farm.store.builders().first?.failureCount == 0)
            // The agent is free again and builds the next job.
            let next = try await submit(farm, "after-cancel")
            try await farm.store.database.query("UPDATE build SET source_name = 'after-cancel' WHERE id = $1", [next])
            #expect(try await waitFor(farm, next, .building))
            try await farm.store.cancel(next)
            #expect(try await waitFor(farm, next, .cancelled, timeout: .seconds(30)))
            try await farm.store.retry(id)
            #expect(try await farm.store.build(id).build.status == .needsBuild)
        }
    }

    @Test func aProcessorAddedWhileTheMasterRunsGetsItsBuildsDispatched() async throws {
        let farm = try await farm()
        try await closing(farm) {
            try await farm.startMaster()
            // `buildd-master processor add` with a broker declares the queue at once; the running master
            // picks the processor up from the database without a restart.
            let cli = try farm.spawn("buildd-master", ["processor", "add", "riscv64", "--database", farm.database.url,
                                                       "--broker", farm.vhost.brokerURL], log: farm.directory + "/cli.log")
            try await waitForExit(cli, "buildd-master processor add")
            #expect(cli.terminationStatus == 0, "processor add failed: \(farm.log("cli"))")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "riscv64", processor: "riscv64")
            try await farm.store.addBuilder(name: "rv1", processors: ["riscv64"])
            try farm.startAgent("rv1", processors: ["riscv64"], sampleSeconds: 0.1)
            let id = try await submit(farm, "hello", processor: "riscv64")
            #expect(try await waitFor(farm, id, .fullyBuilt), "master log:\n\(farm.log("master"))")
        }
    }

    @Test func aDeadAgentsBuildIsRequeuedWithinTheLeaseAndBuiltElsewhere() async throws {
        let farm = try await farm()
        try await closing(farm) {
            try await farm.store.addBuilder(name: "doomed", processors: ["amd64"])
            try await farm.store.addBuilder(name: "spare", processors: ["amd64"])
            try await farm.startMaster(lease: 5)
            try farm.startAgent("doomed", processors: ["amd64"], sampleSeconds: 40)
            let id = try await submit(farm, "hello")
            #expect(try await waitFor(farm, id, .building))
            // A master judges leases only once its broker connection has been up for a lease plus a client's
            // longest reconnect wait (LeaseJudgement): the bound below starts from then.
            #expect(try await eventually(timeout: .seconds(60)) { farm.log("master").contains("leases judged again") },
                    "master log:\n\(farm.log("master"))")
            #expect(try await farm.store.build(id).build.status == .building, "the sample build outlasts the wait")
            let agent = try #require(farm.agents["doomed"])
            let killedAt = try await farm.store.database.query("SELECT extract(epoch FROM clock_timestamp()) AS t")
                .first!.double("t")
            kill(agent.processIdentifier, SIGKILL)
            try await waitForExit(agent, "the SIGKILLed agent")
            try farm.startAgent("spare", processors: ["amd64"], sampleSeconds: 0.2)
            #expect(try await waitFor(farm, id, .fullyBuilt, timeout: .seconds(60)), "master log:\n\(farm.log("master"))")
            let requeued = try await farm.store.database.query("""
                SELECT extract(epoch FROM at) AS t FROM build_event
                 WHERE build_id = $1 AND status = 'NEEDSBUILD' AND message LIKE 'retrying: lease expired%'
                """, [id]).first?.optionalDouble("t")
            let delay = try #require(requeued) - killedAt
            print(String(format: "agent killed mid-build: requeued %.2f s later (lease 5 s)", delay))
            #expect(delay <= 5 + 3, "requeue took \(delay) s with a 5 s lease")
            let detail = try await farm.store.build(id)
            #expect(detail.build.builder == "spare" && detail.build.attempt == 2)
            #expect(detail.build.failureCount == 1)
        }
    }
}
