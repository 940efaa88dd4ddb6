import AMQP
import BuilddAgent
import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Disks that fill up, made real with small tmpfs mounts (as root): the masters' artifact store and an
/// agent's work folder. Neither loses a build or blames the package: the build is retried, and the master
/// or the agent says why.
@Suite(.serialized, .timeLimit(.minutes(5))) struct FullDiskTests {
    /// Mounts a tmpfs of `megabytes` on `path` (made if missing) for `body`, and unmounts it afterwards.
    func withSmallDisk(at path: String, megabytes: Int, _ body: () async throws -> Void) async throws {
        try #require(geteuid() == 0, "mounting a small filesystem needs root (the test suite runs as root)")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let mount = try await FarmHarness.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m,mode=0755", "tmpfs", path])
        try #require(mount.status == 0, "mount a tmpfs on \(path): \(mount.error)")
        do {
            try await body()
        } catch {
            _ = try? await FarmHarness.run("/bin/umount", ["-l", path])
            throw error
        }
        _ = try? await FarmHarness.run("/bin/umount", ["-l", path])
    }

    func submit(_ farm: FarmHarness, _ source: String) async throws -> Int64 {
        try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                 sourceName: source, sourceVersion: "1.0"))
    }

    func history(_ farm: FarmHarness, _ id: Int64) async throws -> String {
        try await farm.store.build(id).history.map { "\($0.status) \($0.builder ?? "-") \($0.message ?? "")" }
            .joined(separator: "\n")
    }

    func health(_ farm: FarmHarness) async throws -> (status: Int, text: String) {
        let url = farm.masterURLs[0] + "/healthz"
        let response = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 10) }
        return (response.status, response.text)
    }

    /// A build command that needs `megabytes` of room in its build folder (and, with `result`, leaves a
    /// result of that size), then builds as the sample build does.
    func bulkyBuild(_ farm: FarmHarness, megabytes: Int, result: Bool) throws -> String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let script = farm.directory + "/bulky-build-\(megabytes)\(result ? "-result" : "")"
        let output = result ? "\"$BUILDD_RESULTS/bulk.bin\"" : "bulk.tmp"
        try """
            #!/bin/sh
            set -eu
            head -c \(megabytes)M /dev/urandom > \(output)
            \(result ? "" : "rm -f bulk.tmp")
            exec \(repository)/deploy/examples/sample-build
            """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        return script
    }

    /// The artifact store full: an upload is refused with 507 and leaves no partial file, the master's log and
    /// /healthz say why, and the build counts an infrastructure failure and is retried rather than failed; once
    /// space is freed the retry stores its files and /healthz is ok again.
    @Test func aFullArtifactStoreRefusesUploadsAndTheBuildIsRetried() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await withSmallDisk(at: farm.artifactRoot, megabytes: 8) {
                try await farm.store.addNobleProcessors(["amd64"])
                for name in ["store-a1", "store-a2"] { try await farm.store.addBuilder(name: name, processors: ["amd64"]) }
                try await farm.startMaster(lease: 10)
                // All but 256 KiB taken: the build's 1 MiB result cannot be stored.
                let filler = farm.artifactRoot + "/filler"
                let free = try #require(ArtifactStore(root: farm.artifactRoot).freeBytes())
                let fill = try await FarmHarness.run("/bin/sh", ["-c", "head -c \(free - 256 * 1024) /dev/zero > \(filler)"])
                try #require(fill.status == 0, "fill the store: \(fill.error)")
                let command = try bulkyBuild(farm, megabytes: 1, result: true)
                for name in ["store-a1", "store-a2"] {
                    try farm.startAgent(name, processors: ["amd64"], sampleSeconds: 0.2, commands: "binarypackage = \(command)")
                }
                let id = try await submit(farm, "bulky")
                // The first attempt's uploads are refused (507) until the agent gives up on them: BUILDERFAIL,
                // counted as an infrastructure failure, and the build is retried.
                let retried = try await eventually(timeout: .seconds(60)) {
                    try await history(farm, id).contains("retrying:")
                }
                let text = try await history(farm, id)
                #expect(retried, "the build was retried after the store refused its upload:\n\(text)")
                #expect(text.contains("507") && text.contains("artifact store is full"),
                        "the retry says the artifact store is full:\n\(text)")
                let seen = try await health(farm)
                #expect(seen.status == 503 && seen.text.contains("artifact store: full"), "/healthz says why: \(seen)")
                #expect(farm.log("master").contains("artifact store full"), "the master's log says why")
                let metrics = try await farm.metricsText()
                #expect(metrics.contains("reason=\"store_full\""), "the refusal is counted by reason")
                #expect(metrics.contains("buildd_artifact_store_free_bytes"), "and the store's free bytes are exported")
                // The retry's own uploads go on meanwhile (and are refused in turn): one may be on its way at any
                // moment, but none is left behind - the folder of uploads in progress empties.
                var partial: [String] = []
                let noneLeft = try await eventually(timeout: .seconds(20), interval: .milliseconds(50)) {
                    partial = (try? FileManager.default.contentsOfDirectory(atPath: farm.artifactRoot + "/tmp")) ?? []
                    return partial.isEmpty
                }
                #expect(noneLeft, "no partial upload is left: \(partial)")

                try FileManager.default.removeItem(atPath: filler)
                let built = try await eventually(timeout: .seconds(60)) {
                    try await farm.store.build(id).build.status == .fullyBuilt
                }
                let after = try await history(farm, id)
                #expect(built, "once space is freed the retry ends FULLYBUILT:\n\(after)")
                let detail = try await farm.store.build(id)
                #expect(detail.files.contains { $0.name == "bulk.bin" && $0.size == 1 << 20 }, "its result was stored whole")
                #expect(!detail.history.contains { $0.status == BuildStatus.failedToBuild.rawValue }, "never failed")
                let healthy = try await eventually(timeout: .seconds(20)) { try await health(farm).status == 200 }
                #expect(healthy, "/healthz is ok once an upload is stored again")
                try await checkInvariants(farm.store, builds: 1)
                _ = await farm.stopAll()
            }
        }
    }

    /// The database out of disk: the tables events write to live on a small filesystem (a tablespace on a
    /// tmpfs) that a filler table fills. Writes fail with 53100 ("could not extend file"): the master retries
    /// each event, never dead-letters one, steps down from the status shards and says why in /healthz and
    /// /metrics; once space is freed every build ends, nothing lost.
    @Test func aDatabaseOutOfDiskLosesNoEvent() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let location = NSTemporaryDirectory() + "buildd-tablespace-\(randomHexToken(bytes: 4))"
            defer { try? FileManager.default.removeItem(atPath: location) }
            try await withSmallDisk(at: location, megabytes: 24) {
                // The server's own user owns the tablespace's folder.
                let admin = try TestEnvironment.adminDatabaseURL
                let dataDirectory = try await runBlocking { () -> String in
                    let connection = try PostgresConnection(url: admin)
                    defer { connection.close() }
                    return try connection.query("SELECT current_setting('data_directory') AS d").first!.string("d")
                }
                var owner = stat()
                try #require(stat(dataDirectory, &owner) == 0, "stat \(dataDirectory)")
                try #require(chown(location, owner.st_uid, owner.st_gid) == 0 && chmod(location, 0o700) == 0)
                let space = "buildd_small_\(randomHexToken(bytes: 4))"
                let url = farm.database.url
                func run(_ sql: String, on target: String) async throws {
                    try await runBlocking {
                        let connection = try PostgresConnection(url: target)
                        defer { connection.close() }
                        try connection.execute(sql)
                    }
                }
                try await run("CREATE TABLESPACE \(space) LOCATION '\(location)'", on: admin)
                for table in ["build", "buildqueue", "build_event", "builder"] {
                    try await run("ALTER TABLE \(table) SET TABLESPACE \(space)", on: url)
                }
                let store = farm.store
                try await store.addNobleProcessors(["amd64"])
                let agents = ["disk-a1", "disk-a2"]
                for name in agents { try await store.addBuilder(name: name, processors: ["amd64"]) }
                try await farm.startMaster(name: "disk", lease: 9, acceptTimeout: 5)
                var ids: [Int64] = []
                for index in 0..<60 { ids.append(try await submit(farm, "disk\(index)")) }
                for name in agents { try farm.startAgent(name, processors: ["amd64"], sampleSeconds: 0.4) }
                func built() async throws -> Int { try await store.buildCounts(includingFinished: true)["FULLYBUILT"] ?? 0 }
                #expect(try await eventually(timeout: .seconds(60)) { try await built() >= 5 })

                // Fill the tablespace: the filler's insert fails when the disk is full, and its pages stay.
                do {
                    // Stored as it is (no compression, no TOAST): one 7,000-byte row a page.
                    try await run("CREATE TABLE filler (x text) TABLESPACE \(space)", on: url)
                    try await run("ALTER TABLE filler ALTER COLUMN x SET STORAGE PLAIN", on: url)
                    try await run("INSERT INTO filler SELECT repeat('x', 7000) FROM generate_series(1, 100000)", on: url)
                    Issue.record("the filler fitted in the small disk")
                } catch let error as PostgresError {
                    #expect(error.sqlState == "53100", "the filler ran out of disk: \(error)")
                }
                var seen = (status: 0, text: "")
                let said = try await eventually(timeout: .seconds(60)) {
                    seen = try await health(farm)
                    return seen.status == 503 && seen.text.contains("stepped down") && seen.text.contains("53100")
                }
                #expect(said, "/healthz says the master stepped down because the database is out of disk: \(seen)")
                func gauge(_ name: String) async throws -> Double? {
                    try await farm.metricsText().split(separator: "\n").first { $0.hasPrefix(name + " ") }
                        .flatMap { Double($0.split(separator: " ").last ?? "") }
                }
                #expect(try await gauge("buildd_status_shards_stepped_down_total") != nil, "/metrics counts the step-down")
                #expect(farm.log("disk").contains("No space left on device"), "the master's log says why")
                // The database answers, and is no standby: the master takes the shards back a second later, and
                // steps down again a patience (3 s) later. It holds down longer each time (2 s, then 4, ...).
                var holdDown: Double?
                let heldDown = try await eventually(timeout: .seconds(60)) {
                    holdDown = try await gauge("buildd_status_shards_hold_down_seconds")
                    return (holdDown ?? 0) >= 2
                }
                #expect(heldDown, "a second step-down in a row holds down for 2 s or more: \(holdDown.map { "\($0)" } ?? "none")")
                #expect(farm.log("disk").contains("step_downs_in_a_row=2"), "the log counts the step-downs in a row")

                try await run("DROP TABLE filler", on: url)
                #expect(try await farm.waitForQuiet(timeout: .seconds(180)), "every build ends once there is room")
                let after = try await built()
                #expect(after == ids.count, "every build FULLYBUILT (\(after) of \(ids.count))")
                #expect(try await farm.vhost.messageCount(queue: BrokerTopology.deadLetterQueue) == 0,
                        "no event was dead-lettered: each was retried")
                try await checkInvariants(store, builds: ids.count)
                _ = await farm.stopAll()
                // The tables leave the small disk before it is unmounted.
                for table in ["build", "buildqueue", "build_event", "builder"] {
                    try await run("ALTER TABLE \(table) SET TABLESPACE pg_default", on: url)
                }
                try await run("DROP TABLESPACE \(space)", on: admin)
            }
        }
    }

    /// An agent's work folder full: the build command fails for lack of room, and the agent reports
    /// BUILDERFAIL (not PACKAGEFAIL) and says why, so the build is retried and ends on a builder with room.
    @Test func aFullWorkFolderIsTheBuildersFailureNotThePackages() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await withSmallDisk(at: farm.directory + "/work-cramped", megabytes: 2) {
                try await farm.store.addNobleProcessors(["amd64"])
                for name in ["cramped", "roomy"] { try await farm.store.addBuilder(name: name, processors: ["amd64"]) }
                try await farm.startMaster(lease: 10)
                // Needs 3 MiB of scratch room: more than the cramped builder's 2 MiB work folder holds.
                let command = try bulkyBuild(farm, megabytes: 3, result: false)
                try farm.startAgent("cramped", processors: ["amd64"], sampleSeconds: 0.2, commands: "binarypackage = \(command)")
                let id = try await submit(farm, "roomy-needed")
                let retried = try await eventually(timeout: .seconds(60)) {
                    try await history(farm, id).contains("retrying:")
                }
                let text = try await history(farm, id)
                #expect(retried, "the build was retried after failing on the full work folder:\n\(text)")
                #expect(text.contains("is full"), "the retry says the work folder was full:\n\(text)")
                #expect(farm.log("cramped").contains("build failed on a full disk"), "the agent's log says why")
                let failed = try await farm.store.build(id).history.contains { $0.status == BuildStatus.failedToBuild.rawValue }
                #expect(!failed, "not blamed on the package")

                try farm.startAgent("roomy", processors: ["amd64"], sampleSeconds: 0.2, commands: "binarypackage = \(command)")
                let built = try await eventually(timeout: .seconds(90)) {
                    try await farm.store.build(id).build.status == .fullyBuilt
                }
                let detail = try await farm.store.build(id)
                let after = try await history(farm, id)
                #expect(built && detail.build.builder == "roomy", "the build ends FULLYBUILT on the builder with room:\n\(after)")
                try await checkInvariants(farm.store, builds: 1)
                _ = await farm.stopAll()
            }
        }
    }
}
