import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Legacy builders: a master follows launchpad-buildd stand-ins (real XML-RPC over HTTP, served by
/// Tests/Support/buildd-standin.py) next to agents, on real PostgreSQL and RabbitMQ.
@Suite(.serialized, .timeLimit(.minutes(5))) struct LegacyBuilderTests {
    /// Master arguments of these tests: fast polls, short timeouts and deadlines.
    static let fastLegacy = ["--legacy-interval", "0.3", "--legacy-call-timeout", "3", "--legacy-silent-build", "3",
                             "--legacy-abort-deadline", "3"]

    /// A farm with an amd64 arch series that has a chroot, a stand-in, and the named legacy builders.
    func farm(legacy names: [String], arch: String = "amd64", lease: Int = 10,
              startMaster: Bool = true) async throws -> (FarmHarness, LegacyStandIn) {
        let farm = try await FarmHarness.make()
        do {
            try await farm.store.addNobleProcessors(["amd64"])
            let chroot = farm.directory + "/chroot-noble-amd64.tar.gz"
            FileManager.default.createFile(atPath: chroot, contents: Data("a chroot tarball".utf8))
            let artifacts = try ArtifactStore(root: farm.artifactRoot)
            let digest = try artifacts.importFile(at: chroot, name: "chroot-noble-amd64.tar.gz")
            try await farm.store.setChroot(distribution: "ubuntu", series: "noble", archTag: "amd64", name: digest.name,
                                           sha256: digest.sha256, sha1: try artifacts.sha1(sha256: digest.sha256),
                                           size: digest.size)
            let standIn = try await farm.startStandIn(arch: arch)
            for name in names {
                try await farm.store.addBuilder(name: name, processors: ["amd64"], url: standIn.url(name))
            }
            if startMaster { try await farm.startMaster(lease: lease, arguments: Self.fastLegacy) }
            return (farm, standIn)
        } catch {
            await farm.close()
            throw error
        }
    }

    func submit(_ farm: FarmHarness, _ source: String, files: [FileDigest] = []) async throws -> Int64 {
        try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                 sourceName: source, sourceVersion: "1.0", sourceFiles: files))
    }

    func waitFor(_ farm: FarmHarness, _ id: Int64, _ status: BuildStatus, timeout: Duration = .seconds(30)) async throws -> Bool {
        try await eventually(timeout: timeout, interval: .milliseconds(100)) {
            try await farm.store.build(id).build.status == status
        }
    }

    func expectStatus(_ farm: FarmHarness, _ id: Int64, _ status: BuildStatus, timeout: Duration = .seconds(30)) async throws {
        if try await waitFor(farm, id, status, timeout: timeout) { return }
        Issue.record("build \(id) did not reach \(status.rawValue):\n\(try await history(farm, id))\n\(farm.log("master").suffix(3000))")
    }

    func history(_ farm: FarmHarness, _ id: Int64) async throws -> String {
        try await farm.store.build(id).history.map { "\($0.status) \($0.builder ?? "-") \($0.message ?? "")" }
            .joined(separator: "\n")
    }

    func builder(_ farm: FarmHarness, _ name: String) async throws -> BuilderSummary {
        try #require(try await farm.store.builders().first { $0.name == name })
    }

    @Test func aLegacyBuilderIsCheckedThenBuildsAndItsFilesAreCollected() async throws {
        // The master starts once the build's files are scripted (as in resultsMapLikeLaunchpad: started before, it
        // could dispatch the build before its script reached the stand-in, as it did once on two busy cores).
        let (farm, standIn) = try await farm(legacy: ["lp-1"], startMaster: false)
        try await closing(farm) {
            let sourcePath = farm.directory + "/hello_1.0.dsc"
            FileManager.default.createFile(atPath: sourcePath, contents: Data("Source: hello\n".utf8))
            let source = try ArtifactStore(root: farm.artifactRoot).importFile(at: sourcePath, name: "hello_1.0.dsc")
            let id = try await submit(farm, "hello", files: [source])
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(id)": [["files": ["hello_1.0_amd64.deb": "a deb",
                                                                             "hello_1.0_amd64.changes": "changes"]]]])
            try await farm.startMaster(lease: 10, arguments: Self.fastLegacy)
            try await expectStatus(farm, id, .fullyBuilt)
            let detail = try await farm.store.build(id)
            #expect(detail.build.builder == "lp-1")
            let results = detail.files.filter { $0.kind == "result" }.map(\.name).sorted()
            #expect(results == ["hello_1.0_amd64.changes", "hello_1.0_amd64.deb"])
            let deb = try #require(detail.files.first { $0.name == "hello_1.0_amd64.deb" })
            #expect(deb.sha256 == SHA256.hex(of: "a deb"), "stored content is what the builder had")
            #expect(detail.files.contains { $0.kind == "log" && $0.name.hasPrefix("buildlog_ubuntu-noble-amd64.hello_1.0") })
            #expect(detail.history.map(\.status).contains("GATHERING"))
            let calls = try await standIn.calls("lp-1")
            // echo and info before any work; the chroot and the source made present; then build, and clean.
            #expect(Array(calls.prefix(2)) == ["echo", "info"])
            #expect(calls.filter { $0 == "ensurepresent" }.count == 2)
            let state = try await standIn.control("lp-1")
            let build = ((state["calls"] as? [[Any]]) ?? []).first { ($0.first as? String) == "build" }
            #expect(build?[1] as? String == "PACKAGEBUILD-\(id)", "Launchpad's cookie")
            #expect(calls.last == "status" || calls.contains("clean"))
            #expect(calls.contains("clean"))
            #expect(try await builder(farm, "lp-1").builderok)
        }
    }

    @Test func resultsMapLikeLaunchpad() async throws {
        // The master starts once every build's result is scripted: started before, it could dispatch a build
        // before its script reached the stand-in (which then answers OK), as it once did on two busy cores.
        let (farm, standIn) = try await farm(legacy: ["lp-map"], startMaster: false)
        try await closing(farm) {
            let cases: [(String, BuildStatus)] = [("PACKAGEFAIL", .failedToBuild), ("DEPFAIL", .manualDepWait),
                                                  ("CHROOTFAIL", .chrootWait), ("OK", .fullyBuilt)]
            var ids: [(Int64, BuildStatus)] = []
            for (result, status) in cases {
                let id = try await submit(farm, "map-\(result.lowercased())")
                try await standIn.scriptBuilds(["PACKAGEBUILD-\(id)": [["result": result]]])
                ids.append((id, status))
            }
            try await farm.startMaster(lease: 10, arguments: Self.fastLegacy)
            for (id, status) in ids { try await expectStatus(farm, id, status) }
            let depwait = try await farm.store.build(ids[1].0).build
            #expect(depwait.failnotes?.contains("libfoo-dev") == true, "DEPFAIL keeps the missing dependencies")
            #expect(try await farm.store.build(ids[0].0).files.contains { $0.kind == "result" },
                    "a PACKAGEFAIL's files are collected too")
        }
    }

    @Test func givenBackAndBuilderFailedBuildsAreCountedAndRetried() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-retry"])
        try await closing(farm) {
            let givenBack = try await submit(farm, "given-back")
            let failed = try await submit(farm, "builder-failed")
            try await standIn.scriptBuilds([
                "PACKAGEBUILD-\(givenBack)": [["result": "GIVENBACK"], ["result": "OK"]],
                "PACKAGEBUILD-\(failed)": [["result": "BUILDERFAIL"], ["result": "OK"]],
            ])
            for id in [givenBack, failed] {
                try await expectStatus(farm, id, .fullyBuilt)
                let detail = try await farm.store.build(id)
                let text = try await history(farm, id)
                #expect(detail.build.attempt == 2 && detail.build.failureCount == 1, "\(text)")
                #expect(detail.history.contains { $0.status == "NEEDSBUILD" && ($0.message ?? "").contains("retrying") })
            }
        }
    }

    @Test func cancellingALegacyBuildAbortsIt() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-cancel"])
        try await closing(farm) {
            let id = try await submit(farm, "slow")
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(id)": [["duration": 60]]])
            #expect(try await waitFor(farm, id, .building))
            #expect(try await farm.store.cancel(id) == .cancelling)
            try await expectStatus(farm, id, .cancelled, timeout: .seconds(15))
            #expect(try await standIn.calls("lp-cancel").contains("abort"))
            #expect(try await builder(farm, "lp-cancel").builderok)
        }
    }

    /// Every kind of fault ends as a broken-builder event with the reason in failnotes, counted to
    /// Launchpad's threshold (5): one builder per fault, all followed by one master at once.
    @Test func faultsAreCountedUntilTheBuilderIsFailed() async throws {
        let faults: [(builder: String, misbehave: String?, reason: String)] = [
            ("lp-fault", "fault", "Fault 8002"), ("lp-unknown", "unknown-method", "Fault 8001"),
            ("lp-hang", "hang", "no answer within"), ("lp-garbage", "garbage", "malformed XML-RPC answer"),
            ("lp-500", "http500", "HTTP error 500"), ("lp-refused", nil, "connection refused"),
        ]
        let (farm, standIn) = try await farm(legacy: [], startMaster: false)
        try await closing(farm) {
            for fault in faults {
                let url = fault.misbehave == nil ? "http://127.0.0.1:\(try FarmHarness.freePort())" : standIn.url(fault.builder)
                try await farm.store.addBuilder(name: fault.builder, processors: ["amd64"], url: url)
                if let misbehave = fault.misbehave { try await standIn.control(fault.builder, ["misbehave": misbehave]) }
            }
            try await farm.startMaster(arguments: Self.fastLegacy)
            for fault in faults {
                let failed = try await eventually(timeout: .seconds(40)) {
                    try await !self.builder(farm, fault.builder).builderok
                }
                let builder = try await builder(farm, fault.builder)
                #expect(failed, "\(fault.builder) was failed")
                #expect(builder.failureCount >= 5, "\(fault.builder) failed \(builder.failureCount) times")
                #expect(builder.failnotes?.contains(fault.reason) == true, "\(fault.builder): \(builder.failnotes ?? "")")
            }
            #expect(farm.masters.allSatisfy { $0.process.isRunning }, "the master survived every fault")
        }
    }

    @Test func aFaultDuringABuildRequeuesItForAnotherBuilder() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-first"], startMaster: true)
        try await closing(farm) {
            let id = try await submit(farm, "faulted")
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(id)": [["duration": 60]]])
            #expect(try await waitFor(farm, id, .building))
            try await standIn.control("lp-first", ["misbehave": "fault"])
            try await farm.store.addBuilder(name: "lp-second", processors: ["amd64"], url: standIn.url("lp-second"))
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(id)": [["duration": 1]]])
            try await expectStatus(farm, id, .fullyBuilt)
            let detail = try await farm.store.build(id)
            #expect(detail.build.builder == "lp-second" && detail.build.attempt == 2)
            let text = try await history(farm, id)
            #expect(detail.history.contains { ($0.message ?? "").contains("Fault 8002") }, "\(text)")
            let first = try await builder(farm, "lp-first")
            #expect(first.failnotes?.contains("Fault 8002") == true)
        }
    }

    @Test func aBuilderThatLosesItsBuildGetsItRequeuedAndIsCleaned() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-lose"])
        try await closing(farm) {
            let lost = try await submit(farm, "lost")
            let forgotten = try await submit(farm, "forgotten")
            try await standIn.scriptBuilds([
                "PACKAGEBUILD-\(lost)": [["misbehave": "lose", "duration": 5], ["duration": 0.5]],
                "PACKAGEBUILD-\(forgotten)": [["misbehave": "forget"], ["duration": 0.5]],
            ])
            for id in [lost, forgotten] {
                try await expectStatus(farm, id, .fullyBuilt)
                let attempt = try await farm.store.build(id).build.attempt
                let text = try await history(farm, id)
                #expect(attempt == 2, "\(text)")
            }
            #expect(try await history(farm, lost).contains("LOST-0"), "the reason names what the builder ran")
            let calls = try await standIn.calls("lp-lose")
            #expect(calls.contains("abort") && calls.contains("clean"), "the foreign build was stopped and cleaned")
        }
    }

    @Test func aBuilderWedgedInBuildingOrAbortingIsFailed() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-wedged", "lp-stuck-abort"])
        try await closing(farm) {
            try await farm.store.setBuilderManual("lp-stuck-abort", true, actor: "test")
            let wedged = try await submit(farm, "wedged")
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(wedged)": [["misbehave": "wedge"], ["duration": 0.5]]])
            #expect(try await eventually(timeout: .seconds(20)) { try await !self.builder(farm, "lp-wedged").builderok })
            #expect(try await builder(farm, "lp-wedged").failnotes?.contains("no new output") == true)
            // Its build went back to the queue: the other builder takes it.
            try await farm.store.setBuilderManual("lp-stuck-abort", false, actor: "test")
            try await expectStatus(farm, wedged, .fullyBuilt)
            #expect(try await farm.store.build(wedged).build.builder == "lp-stuck-abort")

            let cancelled = try await submit(farm, "stuck-abort")
            try await standIn.scriptBuilds(["PACKAGEBUILD-\(cancelled)": [["misbehave": "wedge-abort", "duration": 60]]])
            #expect(try await waitFor(farm, cancelled, .building))
            try await farm.store.cancel(cancelled)
            #expect(try await eventually(timeout: .seconds(20)) { try await !self.builder(farm, "lp-stuck-abort").builderok })
            #expect(try await builder(farm, "lp-stuck-abort").failnotes?.contains("ABORTING") == true)
            try await expectStatus(farm, cancelled, .cancelled)
        }
    }

    @Test func unknownBuilderUnknownSumAndABadDigestEndInAClearFailure() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-unknown-sum"])
        try await closing(farm) {
            let sum = try await submit(farm, "unknown-sum")
            let type = try await submit(farm, "unknown-builder")
            let digest = try await submit(farm, "bad-digest")
            try await standIn.scriptBuilds([
                "PACKAGEBUILD-\(sum)": [["misbehave": "unknownsum"], ["duration": 0.3]],
                "PACKAGEBUILD-\(type)": [["misbehave": "unknownbuilder"], ["duration": 0.3]],
                "PACKAGEBUILD-\(digest)": [["misbehave": "bad-sha1", "duration": 0.3], ["duration": 0.3]],
            ])
            for id in [sum, type, digest] { try await expectStatus(farm, id, .fullyBuilt) }
            #expect(try await history(farm, sum).contains("BuilderStatus.UNKNOWNSUM"))
            #expect(try await history(farm, type).contains("BuilderStatus.UNKNOWNBUILDER"))
            #expect(try await history(farm, digest).contains("does not match its SHA-1"))
            // Only the second attempt's verified file was kept as the result.
            let files = try await farm.store.build(digest).files.filter { $0.kind == "result" }
            #expect(files.count == 1 && files[0].attempt == 2)
        }
    }

    /// A 64 MiB result file goes from the builder's file cache into the artifact store as it arrives,
    /// checked against its SHA-1 on the way: stored whole and right, and the master's peak memory grows by
    /// far less than the file. A file that fails its SHA-1 leaves nothing behind (above, and checked here).
    @Test func aBigResultFileIsStreamedIntoTheStoreNotHeldInMemory() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-big"])
        try await closing(farm) {
            func peak() throws -> Int {
                let pid = farm.masters[0].process.processIdentifier
                let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
                let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") })
                return Int(line.split(separator: " ").dropFirst().first ?? "0").map { $0 * 1024 } ?? 0
            }
            let size = 64 << 20
            let warm = try await submit(farm, "warm-up")
            try await expectStatus(farm, warm, .fullyBuilt)
            let before = try peak()
            // Scripted before the builder may take them (manual mode meanwhile).
            try await farm.store.setBuilderManual("lp-big", true, actor: nil)
            let id = try await submit(farm, "big")
            let bad = try await submit(farm, "big-bad")
            try await standIn.scriptBuilds([
                "PACKAGEBUILD-\(id)": [["file_bytes": ["big_1.0_amd64.tar": size], "duration": 0.3]],
                "PACKAGEBUILD-\(bad)": [["file_bytes": ["big-bad_1.0_amd64.tar": size], "misbehave": "bad-sha1",
                                         "duration": 0.3], ["duration": 0.3]],
            ])
            try await farm.store.setBuilderManual("lp-big", false, actor: nil)
            try await expectStatus(farm, id, .fullyBuilt, timeout: .seconds(90))
            try await expectStatus(farm, bad, .fullyBuilt, timeout: .seconds(90))
            let after = try peak()
            let pattern = (0..<size).map { UInt8($0 & 0xff) }
            let file = try #require(try await farm.store.build(id).files.first { $0.name == "big_1.0_amd64.tar" })
            #expect(file.size == Int64(size) && file.sha256 == SHA256.hex(of: pattern))
            #expect(try await history(farm, bad).contains("does not match its SHA-1"))
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: farm.artifactRoot + "/tmp")
            #expect(leftovers.isEmpty, "no partial file: \(leftovers)")
            print("master peak RSS \(before >> 20) MiB before two 64 MiB legacy results, \(after >> 20) MiB after")
            #expect(after - before < size / 4, "peak RSS grew \((after - before) >> 20) MiB for a 64 MiB file")
        }
    }

    @Test func aBuilderThatIsNotWhatItWasRegisteredAsGetsNoWork() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-arm"], arch: "arm64", startMaster: false)
        try await closing(farm) {
            try await farm.store.addBuilder(name: "lp-old", processors: ["amd64"], url: standIn.url("lp-old"))
            try await standIn.control("lp-old", ["protocol": "0.9", "arch": "amd64"])
            let id = try await submit(farm, "nobody")
            try await farm.startMaster(arguments: Self.fastLegacy)
            let refused = try await eventually(timeout: .seconds(15)) {
                let arm = try await self.builder(farm, "lp-arm").builderok
                let old = try await self.builder(farm, "lp-old").builderok
                return !arm && !old
            }
            #expect(refused)
            #expect(try await builder(farm, "lp-arm").failnotes?.contains("architecture arm64") == true)
            #expect(try await builder(farm, "lp-old").failnotes?.contains("protocol 0.9") == true)
            #expect(try await farm.store.build(id).build.status == .needsBuild)
            #expect(try await !standIn.calls("lp-arm").contains("build"))
        }
    }

    @Test func anArchSeriesWithoutAChrootWaitsForOne() async throws {
        let (farm, _) = try await farm(legacy: ["lp-nochroot"], startMaster: false)
        try await closing(farm) {
            try await farm.store.database.query("UPDATE distroarchseries SET chroot_sha256 = NULL, chroot_sha1 = NULL")
            let id = try await submit(farm, "no-chroot")
            try await farm.startMaster(arguments: Self.fastLegacy)
            try await expectStatus(farm, id, .chrootWait)
            #expect(try await farm.store.build(id).build.failnotes?.contains("archseries chroot") == true)
        }
    }

    /// Two masters share the legacy builders out (``LegacyShare``: each follows the builders it wins among
    /// the live masters, one master per builder); when one is SIGKILLed the other takes all of them within
    /// the ownership lease (10 s) and a tick, and builds on the ones it took over.
    @Test func twoMastersShareTheLegacyBuildersAndOneTakesAllOfAKilledOnesWithinALease() async throws {
        let names = (0..<8).map { "lp-share-\($0)" }
        let (farm, standIn) = try await farm(legacy: names, startMaster: false)
        try await closing(farm) {
            try await farm.startMaster(name: "first", arguments: Self.fastLegacy)
            try await farm.startMaster(name: "second", arguments: Self.fastLegacy)
            let expected = Dictionary(uniqueKeysWithValues: names.map { ($0, LegacyShare.owner(of: $0, among: ["first", "second"])!) })
            #expect(Set(expected.values) == ["first", "second"], "both masters win some of these names: \(expected)")
            let shared = try await eventually(timeout: .seconds(20)) { try await owners(farm) == expected }
            let seen = try await owners(farm)
            #expect(shared, "each builder followed by the master it hashes to: \(seen), not \(expected)")
            // Each builder is followed by one master at a time: no builder's calls come from both.
            try await Task.sleep(for: .seconds(2))
            #expect(try await owners(farm) == expected, "the shares hold")

            let first = farm.masters.first { $0.name == "first" }!.process
            kill(first.processIdentifier, SIGKILL)
            try await waitForExit(first, "the SIGKILLed master")
            let clock = ContinuousClock()
            let killed = clock.now
            let all = Dictionary(uniqueKeysWithValues: names.map { ($0, "second") })
            let tookAll = try await eventually(timeout: .seconds(25)) { try await owners(farm) == all }
            let after = try await owners(farm)
            #expect(tookAll, "\(after)")
            let took = clock.now - killed
            print("legacy builders of a killed master taken over in \(took) (ownership lease 10 s)")
            #expect(took < .seconds(10 + 4), "within the ownership lease and a tick or two: \(took)")
            // The taken-over builders build.
            var ids: [Int64] = []
            for index in 0..<8 { ids.append(try await submit(farm, "after-takeover-\(index)")) }
            for id in ids { try await expectStatus(farm, id, .fullyBuilt, timeout: .seconds(60)) }
            let built = Set(try await ids.asyncMap { try await farm.store.build($0).build.builder ?? "-" })
            #expect(built.contains { expected[$0] == "first" }, "builders that were the killed master's build: \(built)")
            _ = standIn
        }
    }

    /// The failure ledger of a legacy builder is stored whole: faults counted while it held no build are forgiven
    /// when it answers well again, by whichever master follows it then. Here the master that counted them is
    /// SIGKILLed before the builder recovers, and the master that takes the builder over forgives them.
    @Test func faultsCountedByAKilledMasterAreForgivenByTheOneThatTakesTheBuilderOver() async throws {
        let (farm, standIn) = try await farm(legacy: ["lp-ledger"], startMaster: false)
        try await closing(farm) {
            try await standIn.control("lp-ledger", ["misbehave": "fault"])
            let slow = ["--legacy-interval", "1.5", "--legacy-call-timeout", "3"]
            try await farm.startMaster(name: "first", arguments: slow)
            let counted = try await eventually(timeout: .seconds(20), interval: .milliseconds(50)) {
                try await self.ledger(farm).idleFaults >= 2
            }
            let first = farm.masters.first { $0.name == "first" }!.process
            kill(first.processIdentifier, SIGKILL)
            try await waitForExit(first, "the SIGKILLed master")
            let before = try await ledger(farm)
            #expect(counted && before.failures == before.idleFaults && before.failures < FailureThresholds.builder,
                    "\(before)")
            #expect(before.notes?.contains("Fault 8002") == true, "\(before)")
            try await standIn.control("lp-ledger", ["misbehave": NSNull()])
            try await farm.startMaster(name: "second", arguments: slow)
            let forgiven = try await eventually(timeout: .seconds(30)) {
                let now = try await self.ledger(farm)
                return now.failures == 0 && now.idleFaults == 0 && now.notes == nil
            }
            let after = try await ledger(farm)
            #expect(forgiven, "the master that took the builder over forgave the faults another counted: \(after)")
            #expect(try await owners(farm) == ["lp-ledger": "second"])
            #expect(try await builder(farm, "lp-ledger").builderok)
        }
    }

    func ledger(_ farm: FarmHarness) async throws -> (failures: Int, idleFaults: Int, notes: String?) {
        let row = try #require(try await farm.store.database.query(
            "SELECT failure_count, idle_faults, failnotes FROM builder WHERE name = 'lp-ledger'").first)
        return (try row.int("failure_count"), try row.int("idle_faults"), row["failnotes"])
    }

    func owners(_ farm: FarmHarness) async throws -> [String: String] {
        var owners: [String: String] = [:]
        for row in try await farm.store.database.query(
            "SELECT name, legacy_master FROM builder WHERE kind = 'xmlrpc' AND legacy_lease_until > now()").rows {
            owners[try row.string("name")] = row["legacy_master"]
        }
        return owners
    }

    /// Agents and legacy builders of one processor share one queue: 50 builds, every invariant holds.
    @Test func aMixedFarmBuildsFiftyBuilds() async throws {
        let (farm, _) = try await farm(legacy: ["lp-a", "lp-b"], startMaster: false)
        try await closing(farm) {
            for agent in ["agent-a", "agent-b"] { try await farm.store.addBuilder(name: agent, processors: ["amd64"]) }
            var ids: [Int64] = []
            for index in 0..<50 { ids.append(try await submit(farm, "mixed-\(index)")) }
            try await farm.startMaster(arguments: Self.fastLegacy)
            for agent in ["agent-a", "agent-b"] { try farm.startAgent(agent, processors: ["amd64"], sampleSeconds: 0.2) }
            #expect(try await farm.waitForQuiet(timeout: .seconds(120)))
            for id in ids { #expect(try await farm.store.build(id).build.status == .fullyBuilt) }
            try await checkInvariants(farm.store, builds: 50)
            let byBuilder = Dictionary(grouping: try await farm.store.builds(statuses: [.fullyBuilt], limit: 100),
                                       by: { $0.builder ?? "" }).mapValues(\.count)
            print("mixed farm: builds per builder \(byBuilder.sorted { $0.key < $1.key })")
            #expect((byBuilder["lp-a"] ?? 0) + (byBuilder["lp-b"] ?? 0) > 0, "legacy builders built some")
            #expect((byBuilder["agent-a"] ?? 0) + (byBuilder["agent-b"] ?? 0) > 0, "agents built some")
        }
    }
}
