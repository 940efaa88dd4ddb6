#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Synchronization

/// `buildd-bench`: the measurements behind the README's Performance section. Each subcommand prints
/// progress on stderr and one JSON line of figures on stdout; `deploy/localfarm bench` runs them all
/// against private services and running masters and prints the table.
@main
struct BuilddBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buildd-bench",
        abstract: "Measure buildd: the durable floors, dispatch latency, throughput, queue depth, memory.",
        subcommands: [PostgresFloorCommand.self, BrokerFloorCommand.self, DispatchCommand.self, ThroughputCommand.self,
                      DepthCommand.self, FleetCommand.self])
}

struct Services: ParsableArguments {
    @Option(help: "PostgreSQL URL of the farm's database.")
    var database = ProcessInfo.processInfo.environment["BUILDD_DATABASE_URL"] ?? ""

    @Option(help: "AMQP URL of the farm's broker (its vhost).")
    var broker = ProcessInfo.processInfo.environment["BUILDD_BROKER_URL"] ?? ""

    func validate() throws {
        if database.isEmpty { throw ValidationError("--database or BUILDD_DATABASE_URL is required") }
        if broker.isEmpty { throw ValidationError("--broker or BUILDD_BROKER_URL is required") }
    }
}

struct PostgresFloorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres-floor", abstract: "Durable single-row commits: latency, and rate with 1 and N connections.")

    @OptionGroup var services: Services
    @Option(help: "Commits timed one by one.") var samples = 2000
    @Option(help: "Connections committing at once for the rate.") var connections = 8
    @Option(help: "Seconds each rate is measured over.") var seconds = 5.0

    func run() async throws {
        emit(try await PostgresFloor.run(url: services.database, samples: samples, connections: connections,
                                         seconds: seconds), name: "postgres-floor")
    }
}

struct BrokerFloorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "broker-floor",
        abstract: "Persistent messages with confirms and a consumer with acks: latency and rate.")

    @OptionGroup var services: Services
    @Option(help: "Messages timed one by one.") var samples = 2000
    @Option(help: "Messages for the rate.") var messages = 50_000

    func run() async throws {
        emit(try await BrokerFloor.run(url: services.broker, samples: samples, messages: messages), name: "broker-floor")
    }
}

struct DispatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Latency from the commit of a submitted build to the job in an idle agent's hands (its `accepted`).")

    @OptionGroup var services: Services
    @Option(help: "Builds submitted one at a time.") var samples = 500
    @Option(help: "Idle simulated agents waiting.") var agents = 4

    func run() async throws {
        let farm = BenchFarm(databaseURL: services.database)
        let names = try await farm.prepare(builderPrefix: "dispatch-", count: agents)
        let arrivals = Arrivals()
        let sim = try SimulatedAgents(
            brokerURL: services.broker, processor: BenchFarm.processor, names: names, prefetch: 16,
            hooks: .init(jobReceived: { job, time in arrivals.record(job, at: time) }))
        let running = Task { try await sim.run() }
        defer { running.cancel() }
        try await farm.waitUntilIdle(names, since: sim.session)
        var fromCommit = Samples()
        var fromSubmit = Samples()
        let request = BuildRequest(distribution: BenchFarm.distribution, series: BenchFarm.series,
                                   archTag: BenchFarm.archTag, sourceName: "probe", sourceVersion: "1.0",
                                   urgency: .emergency, pocket: .security)
        for index in 0..<samples {
            let start = now()
            let build = try await farm.store.submit(request)
            let committed = now()
            let arrived = try await arrivals.wait(for: build)
            fromCommit.add((arrived - committed) * 1000)
            fromSubmit.add((arrived - start) * 1000)
            if (index + 1) % 100 == 0 {
                progress("dispatch: \(index + 1) of \(samples), p50 so far \(fromCommit.percentile(50)) ms")
            }
            // Let the agent's `finished` land so every sample starts with idle agents.
            try await waitFor("build \(build) finished", timeout: 30, interval: .milliseconds(2)) {
                let done = try await farm.count("SELECT count(*) AS n FROM build WHERE id = $1 AND status = 'FULLYBUILT'",
                                                [build])
                return (done == 1, "not yet")
            }
        }
        await sim.shutdown()
        emit(["p50_ms": fromCommit.percentile(50), "p99_ms": fromCommit.percentile(99),
              "max_ms": fromCommit.percentile(100), "submit_p50_ms": fromSubmit.percentile(50),
              "samples": Double(samples)], name: "dispatch")
    }
}

struct ThroughputCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "No-op builds per second, queued up front, through whatever masters run, with simulated agents.")

    @OptionGroup var services: Services
    @Option(help: "Builds to push through.") var builds = 20_000
    @Option(help: "Simulated agents.") var agents = 200
    @Option(help: "A label for the result line (e.g. the number of masters).") var label = "throughput"

    func run() async throws {
        let farm = BenchFarm(databaseURL: services.database)
        let names = try await farm.prepare(builderPrefix: "flow-", count: agents)
        let range = try await farm.queueBuilds(builds, score: 1000, label: "noop")
        progress("queued \(builds) builds (\(range.lowerBound)...\(range.upperBound)); starting \(agents) agents")
        let sim = try SimulatedAgents(brokerURL: services.broker, processor: BenchFarm.processor, names: names,
                                      prefetch: UInt16(min(agents * 2, 1000)))
        let statements = await StatementTime.reset(farm.database)
        let cpuBefore = ComponentCPU.now()
        let start = now()
        let running = Task { try await sim.run() }
        defer { running.cancel() }
        var done = 0
        try await waitFor("throughput", timeout: Double(builds) / 20 + 120, interval: .milliseconds(250)) {
            done = try await farm.count("""
                SELECT count(*) AS n FROM build WHERE status = 'FULLYBUILT' AND id BETWEEN $1 AND $2
                """, [range.lowerBound, range.upperBound])
            let rate = Double(done) / (now() - start)
            return (done == builds, "\(done) of \(builds) FULLYBUILT, \(Int(rate)) builds/s")
        }
        let seconds = now() - start
        let cpu = ComponentCPU.now().millisecondsPerBuild(since: cpuBefore, builds: builds)
        await sim.shutdown()
        let lost = try await farm.count("""
            SELECT count(*) AS n FROM build WHERE id BETWEEN $1 AND $2 AND status <> 'FULLYBUILT'
            """, [range.lowerBound, range.upperBound])
        guard lost == 0 else { throw BenchError("\(lost) builds did not end FULLYBUILT") }
        var figures = ["builds": Double(builds), "seconds": seconds, "builds_per_s": Double(builds) / seconds,
                       "agents": Double(agents)]
        // Where the time goes: CPU per build of each part, and PostgreSQL's own time per build.
        for (part, ms) in cpu { figures["cpu_ms_per_build_\(part)"] = ms }
        if statements {
            let time = try await StatementTime.read(farm.database)
            figures["pg_ms_per_build"] = time.total / Double(builds)
            for (query, calls, ms) in time.top {
                progress(String(format: "pg: %8.1f ms in %6d calls (%.3f ms per build): ", ms, calls,
                                ms / Double(builds)) + query)
            }
        }
        progress(cpu.sorted { $0.key < $1.key }.map { "\($0.key) " + String(format: "%.3f", $0.value) }
            .joined(separator: ", ") + " CPU ms per build")
        emit(figures, name: label)
    }
}

struct DepthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "depth",
        abstract: "Turnaround with a deep queue: from an agent's `finished` to the best of N waiting builds in its hands.",
        discussion: """
            The queue is first filled up to --waiting builds with random scores. One simulated agent takes a job, \
            sends `accepted` and `finished`, and times how long until its next job arrives: the master applies \
            `finished`, finds the agent idle, claims the best waiting build, commits and publishes it. Run the \
            master with --lookahead 0 so that no job is published ahead of time.
            """)

    @OptionGroup var services: Services
    @Option(help: "Waiting builds to keep in the queue.") var waiting = 1000
    @Option(help: "Turnarounds to time.") var samples = 300

    func run() async throws {
        let farm = BenchFarm(databaseURL: services.database)
        let names = try await farm.prepare(builderPrefix: "depth-", count: 1)
        // Only this benchmark's agent may be idle: builders of earlier runs still count as idle for a while
        // after their simulated agents stopped, and jobs claimed for them would wait in the queue ahead of
        // the best builds (`deploy/localfarm bench` purges it first). Their claims go back to the queue.
        try await farm.database.query("UPDATE builder SET active = false WHERE name NOT LIKE 'depth-%'")
        try await farm.database.query("""
            UPDATE buildqueue SET state = 'WAITING', dispatched_at = NULL, token_sha256 = NULL WHERE state = 'DISPATCHED'
            """)
        let have = try await farm.waitingBuilds()
        if have < waiting + samples {
            progress("queue has \(have) waiting builds; adding \(waiting + samples - have)")
            _ = try await farm.queueBuilds(waiting + samples - have, score: nil, label: "backlog")
        }
        // Settle the tables as a queue that grew over time would be, rather than racing autovacuum
        // through the rows just added.
        progress("vacuuming build and buildqueue")
        try await farm.database.query("VACUUM (ANALYZE) buildqueue")
        try await farm.database.query("VACUUM (ANALYZE) build")
        let depth = try await farm.waitingBuilds()
        let lastFinished = Mutex<Double?>(nil)
        let turnarounds = Mutex(Samples())
        let sim = try SimulatedAgents(
            brokerURL: services.broker, processor: BenchFarm.processor, names: names, prefetch: 1,
            hooks: .init(
                jobReceived: { _, time in
                    lastFinished.withLock { finished in
                        if let finished { turnarounds.withLock { $0.add((time - finished) * 1000) } }
                        finished = nil
                    }
                },
                finishedSent: { _, time in lastFinished.withLock { $0 = time } }))
        let running = Task { try await sim.run() }
        defer { running.cancel() }
        try await waitFor("depth \(waiting)", timeout: 600, interval: .milliseconds(100)) {
            let count = turnarounds.withLock { $0.count }
            return (count >= samples, "\(count) of \(samples) turnarounds")
        }
        await sim.shutdown()
        let result = turnarounds.withLock { $0 }
        emit(["waiting": Double(depth), "p50_ms": result.percentile(50), "p99_ms": result.percentile(99),
              "samples": Double(result.count)], name: "depth")
    }
}

struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "Many idle builders: every one says hello, then heartbeats; reports how fast the master keeps up and its memory.")

    @OptionGroup var services: Services
    @Option(help: "Simulated builders.") var builders = 10_000
    @Option(help: "Seconds between an agent's heartbeats.") var heartbeat = 10
    @Option(help: "Seconds of heartbeats after every hello was applied.") var seconds = 60
    @Option(help: "The master's process id, to read its memory at the end.") var masterPid: Int32?

    func run() async throws {
        let farm = BenchFarm(databaseURL: services.database)
        let names = try await farm.prepare(builderPrefix: "fleet-", count: builders)
        let sim = try SimulatedAgents(brokerURL: services.broker, processor: BenchFarm.processor, names: names,
                                      prefetch: 100)
        let start = now()
        let running = Task { try await sim.run(heartbeatEvery: .seconds(heartbeat)) }
        defer { running.cancel() }
        try await farm.waitUntilIdle(names, since: sim.session)
        let helloSeconds = now() - start
        progress("fleet: \(builders) hellos applied in \(helloSeconds) s; heartbeats for \(seconds) s")
        try await Task.sleep(for: .seconds(seconds))
        let stale = try await farm.count("""
            SELECT count(*) AS n FROM builder WHERE name LIKE 'fleet-%'
               AND (last_seen IS NULL OR last_seen < now() - make_interval(secs => $1))
            """, [heartbeat * 2])
        var fields: [String: Double] = ["builders": Double(builders), "hello_seconds": helloSeconds,
                                        "events_per_s_hello": Double(builders) / helloSeconds,
                                        "stale_builders": Double(stale)]
        if let masterPid, let status = try? String(contentsOfFile: "/proc/\(masterPid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") || line.hasPrefix("VmHWM:") {
                let kib = Double(line.split(separator: " ").dropFirst().first.map(String.init) ?? "") ?? 0
                fields[line.hasPrefix("VmRSS:") ? "master_rss_mib" : "master_hwm_mib"] = kib / 1024
            }
        }
        await sim.shutdown()
        emit(fields, name: "fleet")
    }
}
