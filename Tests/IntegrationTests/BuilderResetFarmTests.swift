import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Builder reset on real services (``BuilderReset``): a virtualized builder with a reset is DIRTY after every
/// build and gets no job until a master has reset it; an asynchronous reset waits for whoever reset it to
/// say so; a reset that hangs is killed at its deadline and counts against the builder until it is broken.
@Suite(.serialized, .timeLimit(.minutes(5))) struct BuilderResetFarmTests {
    static func request(_ source: String) -> BuildRequest {
        BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: source, sourceVersion: "1.0")
    }

    /// The epoch seconds of the database's clock for a SQL expression over one row.
    static func epoch(_ store: BuilddStore, _ sql: String, _ parameters: [String]) async throws -> Double? {
        try await store.database.query("SELECT extract(epoch FROM (\(sql))) AS t", parameters).first?.optionalDouble("t")
    }

    /// Two builds on one virtualized builder with a synchronous reset command: the reset runs after each,
    /// the builder shows CLEANING meanwhile and the second build starts only once the first reset ended CLEAN.
    @Test func aVirtualizedBuilderIsResetBetweenTwoBuilds() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            let resets = farm.directory + "/resets.log"
            let add = try await farm.cli("builder", "add", "vm-1", "--processor", "amd64", "--broker-user", "guest")
            #expect(add.status == 0, "\(add)")
            // The reset records itself, then takes a while, as reverting a machine does.
            let set = try await farm.cli("builder", "set-reset", "vm-1", "--command",
                                         "echo \"$BUILDD_BUILDER $BUILDD_RESET_ATTEMPT\" >> \(resets); sleep 2",
                                         "--timeout", "60")
            #expect(set.status == 0 && set.output.contains("reset command (protocol 1.1, deadline 60 s)"), "\(set)")
            let shown = try await farm.cli("builder", "show", "vm-1")
            #expect(shown.output.contains("(jobs addressed to it)") && shown.output.contains("sleep 2; now CLEAN"), "\(shown)")
            let refused = try await farm.cli("builder", "set-reset", "vm-1", "--url", "ftp://example")
            #expect(refused.status != 0 && refused.error.contains("http:// or https://"), "\(refused)")
            try await farm.startMaster()
            try farm.startAgent("vm-1", processors: ["amd64"], agentSettings: "shared_queue = false")

            let first = try await store.submit(Self.request("first"))
            let second = try await store.submit(Self.request("second"))
            // Only the builder is read while waiting for its first reset, so a slow machine still samples its 2 s.
            let sawCleaning = try await eventually(timeout: .seconds(90), interval: .milliseconds(50)) {
                try await store.builders().first(where: { $0.name == "vm-1" })?.state(silentAfterSeconds: 20) == "cleaning"
            }
            #expect(sawCleaning, "the builder showed CLEANING while its reset ran")
            #expect(try await eventually(timeout: .seconds(90)) {
                try await store.build(second).build.status == .fullyBuilt
            }, "master: \(farm.log("master").suffix(2500))")
            #expect(try await store.build(first).build.status == .fullyBuilt)
            // One reset after each build (the second may still be running), each with its own attempt.
            #expect(try await eventually(timeout: .seconds(30)) {
                (try? String(contentsOfFile: resets, encoding: .utf8))?.split(separator: "\n") == ["vm-1 1", "vm-1 2"]
            }, "\((try? String(contentsOfFile: resets, encoding: .utf8)) ?? "no resets")")
            // The first reset ended CLEAN before the second build started on the builder.
            let clean = try #require(try await Self.epoch(store, """
                SELECT min(at) FROM builder_event WHERE builder = 'vm-1' AND kind = 'reset' AND reason = 'CLEAN'
                """, []))
            let secondStarted = try #require(try await Self.epoch(store, """
                SELECT min(at) FROM build_event WHERE build_id = $1::bigint AND status = 'BUILDING'
                """, ["\(second)"]))
            let firstEnded = try #require(try await Self.epoch(store, """
                SELECT min(at) FROM build_event WHERE build_id = $1::bigint AND status = 'FULLYBUILT'
                """, ["\(first)"]))
            #expect(firstEnded < clean && clean < secondStarted,
                    "first ended \(firstEnded), reset CLEAN \(clean), second started \(secondStarted)")
            #expect(clean - firstEnded >= 2, "the reset took its 2 s between the builds")
            let history = try await farm.cli("builder", "history", "vm-1")
            #expect(history.output.contains("started: command (protocol 1.1, deadline 60 s)")
                    && !history.output.contains("sleep 2"), "the history names the reset, not its command: \(history)")

            // An operator asks for a reset now (the builder page's Reset, here through the CLI): DIRTY. In manual
            // mode no pass starts it, so asking again changes nothing; back in automatic mode the next pass runs the
            // reset a third time and it ends CLEAN.
            #expect(try await eventually(timeout: .seconds(30)) {
                try await store.builders().first { $0.name == "vm-1" }?.cleanStatus == "CLEAN"
            })
            #expect(try await farm.cli("builder", "manual", "vm-1", "on").status == 0)
            let asked = try await farm.cli("builder", "reset", "vm-1")
            #expect(asked.status == 0 && asked.output.contains("vm-1 is DIRTY: its reset starts with the next pass"), "\(asked)")
            let again = try await farm.cli("builder", "reset", "vm-1")
            #expect(again.status == 0 && again.output.contains("its reset is already due"), "\(again)")
            try await Task.sleep(for: .seconds(2))
            #expect(try await store.builders().first { $0.name == "vm-1" }?.cleanStatus == "DIRTY", "no reset in manual mode")
            #expect(try await farm.cli("builder", "manual", "vm-1", "off").status == 0)
            #expect(try await eventually(timeout: .seconds(30)) {
                (try? String(contentsOfFile: resets, encoding: .utf8))?.split(separator: "\n").last == "vm-1 3"
            }, "the requested reset ran: \((try? String(contentsOfFile: resets, encoding: .utf8)) ?? "no resets")")
            #expect(try await eventually(timeout: .seconds(30)) {
                try await store.builders().first { $0.name == "vm-1" }?.cleanStatus == "CLEAN"
            })
            let requested = try await farm.cli("builder", "history", "vm-1")
            #expect(requested.output.contains("requested: DIRTY until its reset ends"), "\(requested)")
        }
    }

    /// An asynchronous reset (protocol 2.0): the builder stays CLEANING after its command ran, the next build
    /// waits, and `builder clean` (as the machine's reset system would say it) lets it run.
    @Test func anAsynchronousResetWaitsUntilItIsSaidToBeDone() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "vm-2", processors: ["amd64"], brokerUser: "guest")
            let set = try await farm.cli("builder", "set-reset", "vm-2", "--command", "true", "--protocol", "2.0")
            #expect(set.status == 0, "\(set)")
            try await farm.startMaster()
            try farm.startAgent("vm-2", processors: ["amd64"], agentSettings: "shared_queue = false")
            let first = try await store.submit(Self.request("first"))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(first).build.status == .fullyBuilt
            }, "master: \(farm.log("master").suffix(2000))")
            let second = try await store.submit(Self.request("second"))
            try await Task.sleep(for: .seconds(4))
            let waiting = try await store.build(second)
            #expect(waiting.build.status == .needsBuild && waiting.build.attempt == 0, "\(waiting.history)")
            let builder = try #require(try await store.builders().first { $0.name == "vm-2" })
            #expect(builder.cleanStatus == "CLEANING" && builder.state(silentAfterSeconds: 20) == "cleaning")
            let done = try await farm.cli("builder", "clean", "vm-2")
            #expect(done.status == 0 && done.output.contains("vm-2 is CLEAN"), "\(done)")
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(second).build.status == .fullyBuilt
            }, "master: \(farm.log("master").suffix(2000))")
            #expect(try await store.build(second).build.builder == "vm-2")
        }
    }

    /// A reset that hangs is killed at its deadline, with what it started, and counts as a builder failure;
    /// five in a row mark the builder not ok, and the next build goes to another builder.
    @Test func aResetThatHangsFailsTheBuilder() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "vm-3", processors: ["amd64"], brokerUser: "guest")
            try await store.addBuilder(name: "plain-3", processors: ["amd64"], brokerUser: "guest")
            // A marker only this test's hanging resets carry, to find what they left running.
            let marker = "buildd-reset-hangs-\(UInt32.random(in: 0...UInt32.max))"
            let set = try await farm.cli("builder", "set-reset", "vm-3", "--command",
                                         "sh -c 'sleep 120; echo \(marker)' & wait", "--timeout", "1")
            #expect(set.status == 0, "\(set)")
            try await farm.startMaster()
            try farm.startAgent("vm-3", processors: ["amd64"], agentSettings: "shared_queue = false")
            // vm-3 builds first: the only builder up.
            let first = try await store.submit(Self.request("first"))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(first).build.status == .fullyBuilt
            }, "master: \(farm.log("master").suffix(2000))")
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.builders().first { $0.name == "vm-3" }?.builderok == false
            }, "master: \(farm.log("master").suffix(2500))")
            let broken = try #require(try await store.builders().first { $0.name == "vm-3" })
            #expect(broken.failureCount == 5 && (broken.failnotes ?? "").contains("reset"), "\(broken)")
            let history = try await store.builderHistory("vm-3")
            #expect(history.filter { $0.kind == "failure" }.count == 5 && history.contains { $0.kind == "failed" },
                    "\(history)")
            // Nothing a killed reset started is left running.
            try await Task.sleep(for: .seconds(1))
            let left = Process()
            left.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
            left.arguments = ["-f", marker]
            left.standardOutput = FileHandle.nullDevice
            try left.run()
            left.waitUntilExit()
            #expect(left.terminationStatus == 1, "pgrep found a reset's process still running")
            // The next build goes to a builder that is fit for it.
            try farm.startAgent("plain-3", processors: ["amd64"])
            let next = try await store.submit(Self.request("next"))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(next).build.status == .fullyBuilt
            }, "master: \(farm.log("master").suffix(2000))")
            #expect(try await store.build(next).build.builder == "plain-3")
        }
    }

    /// An agent that resets its own machine (`--agent`): the master sends it `clean`, it runs its
    /// reset_command and reports; its builder takes the next build only after that. An agent whose machine
    /// the master resets from outside cannot say it is clean: its forged report is refused.
    @Test func anAgentResetsItsOwnMachineAndAForgedResetIsRefused() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "vm-4", processors: ["amd64"], brokerUser: "guest")
            try await store.addBuilder(name: "vm-5", processors: ["amd64"], brokerUser: "guest")
            #expect(try await farm.cli("builder", "set-reset", "vm-4", "--agent").status == 0)
            #expect(try await farm.cli("builder", "set-reset", "vm-5", "--command", "sleep 50", "--timeout", "60").status == 0)
            try await farm.startMaster()

            // vm-5 builds, then its (outside) reset runs for 50 s: CLEANING.
            try farm.startAgent("vm-5", processors: ["amd64"], agentSettings: "shared_queue = false")
            let first = try await store.submit(Self.request("first"))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.builders().first { $0.name == "vm-5" }?.cleanStatus == "CLEANING"
            }, "master: \(farm.log("master").suffix(2000))")
            #expect(try await store.build(first).build.builder == "vm-5")
            // Its agent (or whoever holds its broker credentials) says the reset is done: refused.
            let forged = AgentEvent(kind: .reset, builder: "vm-5", session: "forged", seq: 1, state: .idle)
            var event = forged
            event.resetAttempt = 1
            event.resetOK = true
            let body = WireCodec.encode(event)
            let configuration = try AMQPConfiguration(url: farm.vhost.brokerURL, connectionName: "vm-5-forges")
            try await runBlocking {
                let connection = try AMQPConnection(configuration: configuration)
                defer { connection.close() }
                try connection.openChannel(1)
                try connection.publish(exchange: BrokerTopology.statusExchange,
                                       routingKey: BrokerTopology.statusRoutingKey(builder: "vm-5", event: "reset"),
                                       body: body,
                                       properties: MessageProperties(userID: "guest", headers: [BrokerTopology.builderHeader: .string("vm-5")]),
                                       channel: 1)
            }
            #expect(try await eventually(timeout: .seconds(20)) {
                farm.log("master").contains("is not reset by its agent")
            }, "master: \(farm.log("master").suffix(2000))")
            #expect(try await store.builders().first { $0.name == "vm-5" }?.cleanStatus == "CLEANING")

            // vm-4 resets itself between its builds.
            let resets = farm.directory + "/vm-4-resets.log"
            try farm.startAgent("vm-4", processors: ["amd64"], agentSettings: """
                shared_queue = false
                reset_command = echo "$BUILDD_BUILDER $BUILDD_RESET_ATTEMPT" >> \(resets)
                """)
            let second = try await store.submit(Self.request("second"))
            let third = try await store.submit(Self.request("third"))
            #expect(try await eventually(timeout: .seconds(60)) {
                let a = try await store.build(second).build, b = try await store.build(third).build
                return a.status == .fullyBuilt && b.status == .fullyBuilt
            }, "vm-4: \(farm.log("vm-4").suffix(1500))\nmaster: \(farm.log("master").suffix(2000))")
            #expect(try await store.build(second).build.builder == "vm-4")
            #expect(try await store.build(third).build.builder == "vm-4")
            #expect(try await eventually(timeout: .seconds(30)) {
                (try? String(contentsOfFile: resets, encoding: .utf8))?.split(separator: "\n") == ["vm-4 1", "vm-4 2"]
            }, "\((try? String(contentsOfFile: resets, encoding: .utf8)) ?? "no resets")\n\(farm.log("vm-4").suffix(1500))")
            let clean = try #require(try await Self.epoch(store, """
                SELECT min(at) FROM builder_event WHERE builder = 'vm-4' AND kind = 'reset' AND reason = 'CLEAN'
                """, []))
            let laterStart = try #require(try await Self.epoch(store, """
                SELECT max(at) FROM build_event WHERE build_id = ANY ($1::bigint[]) AND status = 'BUILDING'
                """, ["{\(second),\(third)}"]))
            #expect(clean < laterStart, "the later build started after the agent's first reset ended CLEAN")
        }
    }
}
