import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Build events by webhook: a receiver on loopback (Tests/Support/webhook-receiver.py) checks every signature
/// itself, is down for 30 s while builds end, and gets every event when it is back, each build's in order; a
/// webhook gets only the statuses it asked for, and private builds' events only when it may; a receiver that
/// keeps failing has its webhook disabled, and enabling it by hand delivers what waited. Real PostgreSQL,
/// RabbitMQ, a master and an agent.
@Suite(.serialized, .timeLimit(.minutes(5))) struct WebhookTests {
    static let secret = "a-shared-secret-\(randomHexToken(bytes: 8))"

    struct Receiver {
        let port: Int
        let out: String
        var process: Process

        /// Every delivery it took (signature good), and the number it refused.
        func received() -> (events: [[String: Any]], keys: [String], refused: Int) {
            let lines = ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n")
            var events: [[String: Any]] = [], keys: [String] = [], refused = 0
            for line in lines {
                guard let entry = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else { continue }
                if entry["ok"] as? Bool == true, let event = entry["event"] as? [String: Any] {
                    events.append(event)
                    keys.append(entry["key"] as? String ?? "")
                } else {
                    refused += 1
                }
            }
            return (events, keys, refused)
        }
    }

    static func startReceiver(_ farm: FarmHarness, port: Int? = nil, out: String? = nil, status: Int? = nil) async throws -> Receiver {
        let port = try port ?? FarmHarness.freePort()
        let out = out ?? farm.directory + "/webhook-\(port).jsonl"
        let log = farm.directory + "/receiver-\(port)-\(randomHexToken(bytes: 2)).log"
        let process = try farm.startSupportScript("webhook-receiver.py", ["\(port)", Self.secret, out]
                                                  + (status.map { ["--status", "\($0)"] } ?? []), log: log)
        let up = try await eventually(timeout: .seconds(10)) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening")
        }
        if !up { throw SimpleHTTPClient.Failure(description: "receiver did not start") }
        return Receiver(port: port, out: out, process: process)
    }

    static func addHook(_ farm: FarmHarness, _ name: String, _ receiver: Receiver, _ extra: [String] = []) async throws {
        let secretFile = farm.directory + "/\(name).secret"
        try "\(Self.secret)\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        let added = try await farm.cli(["webhook", "add", name, "http://127.0.0.1:\(receiver.port)/hook",
                                        "--secret-file", secretFile] + extra)
        #expect(added.status == 0, "\(added.output) \(added.error)")
    }

    /// Each build's events as the database has them: (build, seq) of every line since the webhook was added.
    static func history(_ store: BuilddStore, builds: [Int64]) async throws -> [Int64: [String]] {
        var statuses: [Int64: [String]] = [:]
        for build in builds {
            statuses[build] = try await store.build(build).history.map(\.status)
        }
        return statuses
    }

    @Test func aReceiverDownForThirtySecondsGetsEveryEventSignedAndInOrder() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "wh-1", processors: ["amd64"])
            var receiver = try await Self.startReceiver(farm)
            defer { receiver.process.terminate() }
            try await Self.addHook(farm, "all", receiver)
            let finals = try await Self.startReceiver(farm)
            defer { finals.process.terminate() }
            try await Self.addHook(farm, "finals", finals, ["--events", "FULLYBUILT"])
            try await farm.startMaster(name: "wh", lease: 10, acceptTimeout: 10)
            try farm.startAgent("wh-1", processors: ["amd64"], sampleSeconds: 0.3)

            func submit(_ name: String, archive: ArchivePurpose = .primary) async throws -> Int64 {
                try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                    sourceName: name, sourceVersion: "1.0", archive: archive))
            }
            var builds: [Int64] = []
            for index in 0..<5 { builds.append(try await submit("whpkg\(index)")) }
            let secret = try await submit("whsecret", archive: .private)
            func ended(_ ids: [Int64]) async throws -> Bool {
                for id in ids where try await store.build(id).build.status != .fullyBuilt { return false }
                return true
            }
            #expect(try await eventually(timeout: .seconds(60)) { try await ended(builds + [secret]) })
            #expect(try await eventually(timeout: .seconds(20)) { receiver.received().events.count >= 5 * 3 })

            // Down for 30 s while more builds end.
            _ = await FarmHarness.stop(receiver.process)
            let downAt = ContinuousClock.now
            for index in 5..<12 { builds.append(try await submit("whpkg\(index)")) }
            #expect(try await eventually(timeout: .seconds(60)) { try await ended(builds) })
            try await Task.sleep(until: downAt + .seconds(30))
            let failed = try await store.webhookDeliveries(name: "all", limit: 1000).filter { $0.httpStatus == nil }
            #expect(!failed.isEmpty, "deliveries failed while the receiver was down")
            receiver = try await Self.startReceiver(farm, port: receiver.port, out: receiver.out)

            let expected = try await Self.history(store, builds: builds)
            let everything = expected.values.map(\.count).reduce(0, +)
            let arrived = try await eventually(timeout: .seconds(90)) {
                Set(receiver.received().events.compactMap { $0["event"] as? Int }).count >= everything
            }
            #expect(arrived, "every event arrived after the outage: \(receiver.received().events.count) of \(everything)")
            let got = receiver.received()
            #expect(got.refused == 0, "every delivery's signature checked out")
            // Each build's events, in order (a duplicate only as a repeat of the same Idempotency-Key).
            var perBuild: [Int64: [(seq: Int, status: String)]] = [:]
            var seen = Set<String>()
            for (event, key) in zip(got.events, got.keys) where seen.insert(key).inserted {
                let build = Int64(event["build"] as? Int ?? 0)
                perBuild[build, default: []].append((event["seq"] as? Int ?? 0, event["status"] as? String ?? ""))
            }
            for build in builds {
                let events = perBuild[build] ?? []
                #expect(events.map(\.seq) == Array(1...max(1, events.count)), "build \(build)'s events in order: \(events)")
                #expect(events.map(\.status) == expected[build], "build \(build): \(events) against \(expected[build] ?? [])")
            }
            #expect(perBuild[secret] == nil, "a private build's events reach no webhook not allowed them")
            // The other webhook asked for FULLYBUILT only.
            let finalEvents = finals.received().events
            #expect(finalEvents.allSatisfy { $0["status"] as? String == "FULLYBUILT" })
            #expect(Set(finalEvents.compactMap { ($0["build"] as? Int).map(Int64.init) }) == Set(builds))
            // Forged: the receiver's own check refuses it (so a refusal count of 0 above means something).
            let forged = try await runBlocking { [port = receiver.port] in
                try SimpleHTTPClient.send(method: "POST", url: "http://127.0.0.1:\(port)/hook",
                                          headers: ["X-Buildd-Signature": "t=1,sha256=00", "Content-Type": "application/json"],
                                          body: .bytes(Array("{}".utf8)), timeoutSeconds: 5)
            }
            #expect(forged.status == 401 && receiver.received().refused == 1)
        }
    }

    @Test func aWebhookThatKeepsFailingIsDisabledThenEnabledByHand() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "wh-2", processors: ["amd64"])
            var receiver = try await Self.startReceiver(farm, status: 500)
            defer { receiver.process.terminate() }
            try await Self.addHook(farm, "broken", receiver)
            try await farm.startMaster(name: "wh", lease: 10, acceptTimeout: 10, arguments: ["--webhook-give-up", "4s"])
            try farm.startAgent("wh-2", processors: ["amd64"], sampleSeconds: 0.2)
            let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                            sourceName: "whmended", sourceVersion: "1.0"))
            let disabled = try await eventually(timeout: .seconds(60)) {
                try await store.webhooks().first { $0.name == "broken" }?.enabled == false
            }
            #expect(disabled, "disabled after failing for longer than the give-up time")
            let hook = try #require(try await store.webhooks().first { $0.name == "broken" })
            #expect(hook.disabledReason?.contains("HTTP 500") == true, "\(hook.disabledReason ?? "")")
            let listed = try await farm.cli("webhook", "list")
            #expect(listed.output.contains("DISABLED"), "\(listed.output)")
            let deliveries = try await farm.cli("webhook", "deliveries", "broken", "--json")
            #expect(deliveries.status == 0 && deliveries.output.contains("\"http_status\" : 500"), "\(deliveries.output)")

            // Mended and enabled by hand: what waited arrives.
            _ = await FarmHarness.stop(receiver.process)
            receiver = try await Self.startReceiver(farm, port: receiver.port)
            #expect(try await eventually(timeout: .seconds(60)) { try await store.build(build).build.status == .fullyBuilt },
                    "\(farm.log("wh").suffix(3000))\n--- agent:\n\(farm.log("wh-2").suffix(3000))")
            let enabled = try await farm.cli("webhook", "enable", "broken")
            #expect(enabled.status == 0)
            let history = try await store.build(build).history.map(\.status)
            #expect(try await eventually(timeout: .seconds(30)) {
                receiver.received().events.compactMap { $0["status"] as? String } == history
            }, "after enabling: \(receiver.received().events) against \(history)")
        }
    }
}
