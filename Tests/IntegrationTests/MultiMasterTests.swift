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
@Suite(.serialized, .timeLimit(.minutes(8))) struct MultiMasterTests {
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

    /// A database that answers but refuses writes (a standby after a failover the master has not followed, a
    /// primary set read-only) fails every event with 25006: the master retries them, never dead-letters one
    /// (it used to, as a failure for good), and says why in /healthz; once writes are taken again every build
    /// ends, nothing lost.
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
                return seen.status == 503 && seen.text.contains("refuses writes")
            }
            #expect(said, "/healthz says the database refuses writes: \(seen)")
            // Agents go on reporting meanwhile: the master retries their events.
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
