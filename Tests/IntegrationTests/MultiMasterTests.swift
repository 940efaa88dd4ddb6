import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Several masters on one database and broker; one dies with SIGKILL in the middle of a run.
@Suite(.serialized, .timeLimit(.minutes(12))) struct MultiMasterTests {
    @Test func theOtherMasterTakesOverWhenOneIsKilled() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64", "arm64"])
            let agents = [("m-a1", "amd64"), ("m-a2", "amd64"), ("m-b1", "arm64"), ("m-b2", "arm64")]
            for (name, processor) in agents { try await store.addBuilder(name: name, processors: [processor]) }
            try await farm.startMaster(name: "first", lease: 10, acceptTimeout: 5)
            try await farm.startMaster(name: "second", lease: 10, acceptTimeout: 5)

            var expected: [Int64: BuildStatus] = [:]
            for index in 0..<200 {
                let processor = index % 2 == 0 ? "amd64" : "arm64"
                let broken = index % 25 == 7
                let id = try await store.submit(BuildRequest(
                    distribution: "ubuntu", series: "noble", archTag: processor,
                    sourceName: broken ? "pkg\(index)-broken" : "pkg\(index)", sourceVersion: "1.0",
                    urgency: Urgency.allCases[index % 4]))
                expected[id] = broken ? .failedToBuild : .fullyBuilt
            }
            for (name, processor) in agents { try farm.startAgent(name, processors: [processor], sampleSeconds: 0.05) }

            // Let the farm get going, then kill the master that holds the status shards: which one that is
            // is read from the broker (each shard's single active consumer), not assumed.
            #expect(try await eventually(timeout: .seconds(120)) {
                (try await store.buildCounts(includingFinished: true)["FULLYBUILT"] ?? 0) >= 40
            })
            let holders = try await shardHolders(farm) { $0.count == BrokerTopology.statusShards }
            #expect(holders.count == BrokerTopology.statusShards, "every status shard has an active consumer: \(holders)")
            let counts = Dictionary(holders.values.map { ($0, 1) }, uniquingKeysWith: +)
            let holder = try #require(counts.max { $0.value < $1.value }?.key, "no shard holder: \(holders)")
            let victimIndex = try #require(farm.masters.firstIndex { "buildd-master-\($0.name)" == holder },
                                           "\(holder) is not one of this farm's masters")
            let survivor = farm.masters[1 - victimIndex].name
            print("status shards held before the kill: \(counts); killing \(farm.masters[victimIndex].name)")
            let victim = farm.masters[victimIndex].process
            let killedAt = try await store.database.query("SELECT extract(epoch FROM clock_timestamp()) AS t").first!.double("t")
            kill(victim.processIdentifier, SIGKILL)
            try await waitForExit(victim, "the SIGKILLed master")

            // Takeover: the first status change applied after the kill (only the survivor can apply it).
            var takeover: Double?
            _ = try await eventually(timeout: .seconds(30), interval: .milliseconds(20)) {
                let row = try await store.database.query("""
                    SELECT extract(epoch FROM min(at)) AS t FROM build_event
                     WHERE at > to_timestamp($1) AND status IN ('BUILDING', 'FULLYBUILT', 'FAILEDTOBUILD')
                    """, [killedAt]).first
                takeover = row?.optionalDouble("t").map { $0 - killedAt }
                return takeover != nil
            }
            let measured = try #require(takeover, "no event applied after the kill")
            print(String(format: "takeover after SIGKILL of a master: %.2f s until the survivor applied an event", measured))
            #expect(measured < 5, "takeover took \(measured) s")
            let after = try await shardHolders(farm) {
                $0.count == BrokerTopology.statusShards && $0.values.allSatisfy { $0 == "buildd-master-\(survivor)" }
            }
            #expect(after.count == BrokerTopology.statusShards
                    && after.values.allSatisfy { $0 == "buildd-master-\(survivor)" },
                    "every status shard moved to \(survivor): \(after)")

            #expect(try await farm.waitForQuiet(timeout: .seconds(300)), "builds still active:\n\(farm.log(survivor))")
            for (id, status) in expected {
                #expect(try await store.build(id).build.status == status, "build \(id)")
            }
            try await checkInvariants(store, builds: expected.count)
            let dispatchedTwice = try await store.database.query("""
                SELECT count(*) AS n FROM (SELECT build_id, attempt FROM build_event WHERE message = 'dispatched'
                                            GROUP BY 1, 2 HAVING count(*) > 1) d
                """).first!.int("n")
            #expect(dispatchedTwice == 0, "an attempt was dispatched twice")
        }
    }

    /// A master whose database link breaks must not keep the status shards: it steps down (its events go back
    /// to the broker and another master's consumer becomes active), builds go on ending on the other master,
    /// and when the database answers again it consumes again, as a standby. Each master reaches the database
    /// through a relay of its own, and each cycle cuts the one that holds the shards: 20 cycles in one run,
    /// so each master steps down and comes back ten times. The relay cuts as a partition does: the master's
    /// connections fail, the database hears nothing and keeps the master's sessions for 20 s, and every other
    /// cut lands inside a transaction. No build may wait longer than a lease for the next one to end, during a
    /// cut or after a heal.
    @Test func aMasterCutOffFromTheDatabaseHandsItsStatusShardsOnTwentyTimesOver() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            let lease = 9
            let cycles = Int(ProcessInfo.processInfo.environment["BUILDD_STEP_DOWN_CYCLES"] ?? "") ?? 20
            try await store.addNobleProcessors(["amd64"])
            let agents = ["d-a1", "d-a2", "d-a3"]
            for name in agents { try await store.addBuilder(name: name, processors: ["amd64"]) }
            var relays: [String: TCPRelay] = [:]
            for name in ["left", "right"] {
                let (relay, relayedURL) = try await farm.startDatabaseRelay()
                relays[name] = relay
                try await farm.startMaster(name: name, lease: lease, acceptTimeout: 5,
                                           databaseURL: relayedURL + "?connect_timeout=2")
            }
            // Enough waiting builds that one always ends within a lease unless something stalls.
            var ids: [Int64] = []
            func topUp(to waiting: Int = 150) async throws {
                let now = try await store.buildCounts()["NEEDSBUILD"] ?? 0
                for _ in 0..<max(0, waiting - now) {
                    ids.append(try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                   sourceName: "pkg\(ids.count)", sourceVersion: "1.0")))
                }
            }
            try await topUp()
            for name in agents { try farm.startAgent(name, processors: ["amd64"], sampleSeconds: 0.3) }
            func built() async throws -> Int { try await store.buildCounts(includingFinished: true)["FULLYBUILT"] ?? 0 }
            #expect(try await eventually(timeout: .seconds(60)) { try await built() >= 5 })

            // Watches builds end: the longest time in which none did, and what the broker held then.
            let clock = ContinuousClock()
            var lastEnd = clock.now, lastCount = try await built(), longest = Duration.zero
            var stalls: [String] = []
            func watch(for span: Duration, _ phase: String) async throws {
                let until = clock.now + span
                while clock.now < until {
                    let count = try await built()
                    if count > lastCount {
                        lastCount = count
                        lastEnd = clock.now
                    }
                    let gap = clock.now - lastEnd
                    longest = max(longest, gap)
                    if gap > .seconds(lease), stalls.count < 3 {
                        stalls.append("\(phase): no build ended for \(gap); shards: \(try await farm.vhost.statusShardReport())"
                                      + "\ndatabase sessions: \(try await farm.database.sessionReport())")
                        lastEnd = clock.now  // one report per stall
                    }
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            func resumed(_ name: String) -> Int {
                farm.log(name).components(separatedBy: "consuming the status shards again").count - 1
            }
            var cuts = ["left": 0, "right": 0]
            for cycle in 1...cycles {
                // The master holding the shards (all of them: the other consumes as a standby) is cut.
                let holders = try await shardHolders(farm) { $0.count == BrokerTopology.statusShards && Set($0.values).count == 1 }
                guard holders.count == BrokerTopology.statusShards, Set(holders.values).count == 1,
                      let holder = holders.values.first, holder.hasPrefix("buildd-master-") else {
                    Issue.record("cycle \(cycle): one master holds every shard: \(holders)")
                    break
                }
                let cut = String(holder.dropFirst("buildd-master-".count))
                try await topUp()
                cuts[cut, default: 0] += 1
                // Every other cut lands inside one of its transactions: the server is left with a session idle
                // in that transaction, holding the locks of what it was changing (the builders of an event batch,
                // a claimed build), which the other master needs next.
                if cycle % 2 == 1 { relays[cut]?.cutInsideATransaction() } else { relays[cut]?.cut() }
                // It steps down within a third of the lease (and some seconds for the failures to show), and the
                // builds of its shards go on ending on the other master meanwhile (watched for stalls).
                func steppedDown(_ name: String) -> Int {
                    farm.log(name).components(separatedBy: "handing the status shards to the other masters").count - 1
                }
                var down = false
                for _ in 0..<(lease * 5) where !down {
                    try await watch(for: .milliseconds(200), "cycle \(cycle), \(cut) cut")
                    down = steppedDown(cut) == cuts[cut]
                }
                #expect(down, "cycle \(cycle): \(cut), cut off from the database, stepped down from the status shards")
                try await watch(for: .seconds(2), "cycle \(cycle), \(cut) cut, stepped down")
                relays[cut]?.heal()
                let back = try await eventually(timeout: .seconds(15)) { resumed(cut) == cuts[cut] }
                #expect(back, "cycle \(cycle): \(cut) consumes again once the database answers")
                try await watch(for: .seconds(2), "cycle \(cycle), \(cut) healed")
                if !stalls.isEmpty || !back { break }
            }
            try await watch(for: .seconds(Double(lease)), "after the last heal")
            print("step-down: \(cycles) cuts and heals (\(cuts)), longest time with no build ending \(longest)")
            #expect(stalls.isEmpty, """
                no build waited longer than a lease (\(lease) s) for the next to end:
                \(stalls.joined(separator: "\n"))
                --- left: \(farm.log("left").suffix(6000))
                --- right: \(farm.log("right").suffix(6000))
                """)
            let quiet = try await farm.waitForQuiet(timeout: .seconds(240))
            if !quiet {
                // What a stuck build's history, the queue and the broker hold, and what each process said of it.
                var report: [String] = [try await farm.vhost.statusShardReport(), try await farm.database.sessionReport()]
                for id in ids {
                    let detail = try await store.build(id)
                    guard detail.build.status.isActive else { continue }
                    report.append("build \(id) \(detail.build.status) on \(detail.build.builder ?? "-"): " + detail.history.map {
                        "\($0.status) attempt \($0.attempt) \($0.builder ?? "-") \($0.message ?? "")" }.joined(separator: "; "))
                    let queue = try await store.database.query(
                        "SELECT state, builder_id, dispatched_at::text AS d, lease_expires::text AS l FROM buildqueue WHERE build_id = $1",
                        [id]).first
                    report.append("queue: \(queue.map { "\($0["state"] ?? "-") builder \($0["builder_id"] ?? "-") dispatched \($0["d"] ?? "-") lease \($0["l"] ?? "-")" } ?? "none")")
                    for log in ["left", "right"] + agents {
                        let lines = farm.log(log).split(separator: "\n").filter { $0.contains("build.id=\(id) ") || $0.hasSuffix("build.id=\(id)") }
                        report.append("--- \(log): " + lines.suffix(12).joined(separator: "\n"))
                    }
                }
                Issue.record("not every build ended:\n\(report.joined(separator: "\n"))")
            }
            try await checkInvariants(store, builds: ids.count)
            #expect(farm.masters.allSatisfy { $0.process.isRunning }, "both masters still run")
        }
    }

    /// A database that answers but refuses writes (a standby after a failover the master has not followed, a
    /// primary set read-only) fails every event with 25006: the master retries them, never dead-letters one,
    /// steps down from the status shards and says why in /healthz and /metrics; once writes are taken again
    /// it consumes again and every build ends, nothing lost.
    @Test func aDatabaseThatRefusesWritesLosesNoEvent() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            let agents = ["ro-a1", "ro-a2"]
            for name in agents { try await store.addBuilder(name: name, processors: ["amd64"]) }
            try await farm.startMaster(name: "ro", lease: 9, acceptTimeout: 5)
            var ids: [Int64] = []
            for index in 0..<80 {
                ids.append(try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                               sourceName: "ro\(index)", sourceVersion: "1.0")))
            }
            for name in agents { try farm.startAgent(name, processors: ["amd64"], sampleSeconds: 0.4) }
            func built() async throws -> Int { try await store.buildCounts(includingFinished: true)["FULLYBUILT"] ?? 0 }
            #expect(try await eventually(timeout: .seconds(60)) { try await built() >= 5 })
            let url = farm.database.url, name = farm.database.name
            /// Sets the database read-only (or not) for new sessions, and ends the master's sessions so that it
            /// gets new ones.
            func readOnly(_ on: Bool) async throws {
                try await runBlocking {
                    let connection = try PostgresConnection(url: url)
                    defer { connection.close() }
                    // This session may be read-only itself (made while the database was).
                    try connection.execute("SET default_transaction_read_only = off")
                    try connection.execute("ALTER DATABASE \(name) SET default_transaction_read_only = \(on ? "on" : "off")")
                    _ = try connection.query("""
                        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = $1 AND application_name LIKE 'buildd-master%'
                        """, [name])
                }
            }
            func health() async throws -> (status: Int, text: String) {
                let url = farm.masterURLs[0] + "/healthz"
                let response = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 10) }
                return (response.status, response.text)
            }
            try await readOnly(true)
            var seen = (status: 0, text: "")
            let said = try await eventually(timeout: .seconds(30)) {
                seen = try await health()
                return seen.status == 503 && seen.text.contains("refuses writes") && seen.text.contains("stepped down")
            }
            #expect(said, "/healthz says the database refuses writes and the master stepped down: \(seen)")
            // Its artifact routes send agents to another master at once, not after a database timeout per file.
            let upload = farm.masterURLs[0] + "/v1/builds/\(ids[0])/attempts/1/files/x.deb?kind=result"
            let headers = ["Authorization": "Bearer " + randomHexToken(bytes: 32),
                           "X-Checksum-Sha256": String(repeating: "a", count: 64)]
            let (status, text) = try await Self.put(upload, headers: headers)
            #expect(status == 503 && text.contains("try another master"), "\(status) \(text)")
            let metrics = try await farm.metricsText()
            #expect(metrics.contains("buildd_status_shards_consuming 0"), "/metrics says it stepped down")
            #expect(metrics.contains("buildd_status_shards_stepped_down_total"), "and counts it")
            #expect(metrics.contains("buildd_database_accepts_writes 0"), "/metrics says the database refuses writes")
            // Agents go on reporting meanwhile: their events wait in the shards.
            try await Task.sleep(for: .seconds(5))
            let during = try await built()
            try await readOnly(false)
            let healthy = try await eventually(timeout: .seconds(30)) { try await health().status == 200 }
            #expect(healthy, "/healthz is ok once writes are taken")
            #expect(try await farm.waitForQuiet(timeout: .seconds(120)), "every build ends")
            let after = try await built()
            #expect(after == ids.count && after > during, "every build FULLYBUILT (\(after) of \(ids.count))")
            #expect(try await farm.vhost.messageCount(queue: BrokerTopology.deadLetterQueue) == 0,
                    "no event was dead-lettered: each was retried")
            #expect(farm.log("ro").contains("25006") || farm.log("ro").contains("read-only"),
                    "the master logged why it could not apply events")
            try await checkInvariants(store, builds: ids.count)
        }
    }

    /// A database host that stops answering fails a connection attempt after buildd's default `connect_timeout`
    /// (5 s), not the kernel's minutes, and a URL's own setting wins over the default.
    @Test func databaseConnectionsGiveUpOnAHostThatDoesNotAnswer() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let (relay, url) = try await farm.startDatabaseRelay()
            relay.cut()  // connections are accepted and never answered
            func secondsToFail(_ url: String) async -> Double? {
                let clock = ContinuousClock()
                let started = clock.now
                let failed = await Task.detached { () -> Bool in
                    do { _ = try PostgresConnection(url: url); return false } catch { return true }
                }.value
                guard failed else { return nil }
                return (clock.now - started).inSeconds
            }
            let byDefault = try #require(await secondsToFail(url), "connected through a cut relay")
            #expect(byDefault >= 4.5 && byDefault < 8, "default connect_timeout (5 s): gave up after \(byDefault) s")
            let bySetting = try #require(await secondsToFail(url + "?connect_timeout=2"), "connected through a cut relay")
            #expect(bySetting >= 1.5 && bySetting < 3.5, "the URL's connect_timeout=2 wins: gave up after \(bySetting) s")
        }
    }

    /// The status shards' holders (as the broker reports them) once `done` holds, or the last seen after 15 s.
    static func put(_ url: String, headers: [String: String]) async throws -> (Int, String) {
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: "PUT", url: url, headers: headers, body: .bytes(Array("x".utf8)),
                                      timeoutSeconds: 10)
        }
        return (response.status, response.text)
    }

    func shardHolders(_ farm: FarmHarness, until done: ([String: String]) -> Bool) async throws -> [String: String] {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(15)
        var holders = try await farm.vhost.statusShardHolders()
        while !done(holders) && clock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            holders = try await farm.vhost.statusShardHolders()
        }
        return holders
    }
}
