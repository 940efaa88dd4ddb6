import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A running build's whole log, live: the agent appends it to the masters as it grows, and it is followed from
/// a second terminal (`buildd-master build log ID --follow`) and as Server-Sent Events (`curl -N`) while the
/// master the agent was appending to is killed. Real PostgreSQL, RabbitMQ, two masters and an agent.
@Suite(.serialized, .timeLimit(.minutes(4))) struct LiveLogTests {
    static let lines = 40

    /// The numbered lines of the sample build (`sample-build: step K/N`) in the order they appear.
    static func steps(in text: String) -> [Int] {
        text.split(separator: "\n").compactMap { line -> Int? in
            guard let range = line.range(of: "sample-build: step ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
    }

    static func get(_ url: String, headers: [String: String] = [:]) async throws -> SimpleHTTPClient.Response {
        try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, headers: headers, timeoutSeconds: 20) }
    }

    @Test func aRunningBuildsLogIsFollowedWholeWhileItsMasterIsKilled() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "live-1", processors: ["amd64"])
            try await farm.startMaster(name: "a", lease: 10, acceptTimeout: 10)
            try await farm.startMaster(name: "b", lease: 10, acceptTimeout: 10)
            try farm.startAgent("live-1", processors: ["amd64"], sampleSeconds: 14,
                                environment: ["BUILDD_SAMPLE_LINES": "\(Self.lines)"])
            let id = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                         sourceName: "livelog", sourceVersion: "1.0"))
            // The master that published the job is the one the agent appends to first.
            var origin: Int?
            #expect(try await eventually(timeout: .seconds(30)) {
                origin = ["a", "b"].firstIndex { farm.log($0).contains("job published") && farm.log($0).contains("build.id=\(id) ") }
                return origin != nil
            })
            let killed = try #require(origin), other = 1 - killed
            let reader = farm.masterURLs[other]
            // The log grows on the masters while the build runs (read from the other master: one shared store).
            #expect(try await eventually(timeout: .seconds(30)) {
                Self.steps(in: try await Self.get(reader + "/v1/builds/\(id)/log").text).count >= 3
            }, "the running build's log is readable from a master before it ends")

            // Two followers from the start of the log: the CLI, and curl reading the event stream.
            let cliLog = farm.directory + "/follow-cli.out", sseLog = farm.directory + "/follow-sse.out"
            let cli = try farm.spawn("buildd-master", ["build", "log", "\(id)", "--follow", "--master", reader], log: cliLog)
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-sN", "--max-time", "120", "-H", "Accept: text/event-stream", reader + "/v1/builds/\(id)/log"]
            FileManager.default.createFile(atPath: sseLog, contents: nil)
            curl.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: sseLog))
            try curl.run()
            defer { if curl.isRunning { curl.terminate() } }

            // Mid-build, the master the agent appends to is killed: it goes on with the other.
            let before = Self.steps(in: try await Self.get(reader + "/v1/builds/\(id)/log").text).count
            kill(farm.masters[killed].process.processIdentifier, SIGKILL)
            #expect(before < Self.lines, "the master was killed while the build ran (\(before) lines in)")

            let ended = try await eventually(timeout: .seconds(90)) {
                try await store.build(id).build.status == .fullyBuilt
            }
            #expect(ended, "the build ends on the other master: \(farm.log("live-1").suffix(3000))")
            #expect(try await eventually(timeout: .seconds(20)) { !cli.isRunning && !curl.isRunning },
                    "both followers stop at the build's end")

            let expected = Array(1...Self.lines)
            let followed = (try? String(contentsOfFile: cliLog, encoding: .utf8)) ?? ""
            #expect(Self.steps(in: followed) == expected, "the CLI showed each line once, in order:\n\(followed)")
            #expect(cli.terminationStatus == 0)
            let events = (try? String(contentsOfFile: sseLog, encoding: .utf8)) ?? ""
            let data = events.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { $0.dropFirst(6) }.joined(separator: "\n")
            #expect(Self.steps(in: data) == expected, "the event stream showed each line once, in order:\n\(events)")
            #expect(events.contains("event: end") && events.contains("\"status\":\"FULLYBUILT\""), "the stream ends with the build's status")

            // Stored whole from what was appended: the stored log is the build's, and the agent did not send it again.
            let stored = try await Self.get(reader + "/v1/builds/\(id)/log")
            #expect(stored.headers["x-log-complete"] == "true")
            #expect(Self.steps(in: stored.text) == expected)
            let detail = try await store.build(id)
            let logFile = try #require(detail.files.first { $0.kind == "log" })
            #expect(logFile.size == Int64(stored.body.count) && logFile.sha256 == SHA256.hex(of: stored.body))
            #expect(farm.log(["a", "b"][other]).contains("build log stored from its live appends"))
            #expect(!farm.log("live-1").contains("sending it whole"), "the agent sent no second copy of the log")
            // And from any offset: the rest of the log after its first 100 bytes.
            let rest = try await Self.get(reader + "/v1/builds/\(id)/log?offset=100")
            #expect(rest.body == Array(stored.body.dropFirst(100)))
            #expect(rest.headers["x-log-offset"] == "\(stored.body.count)")
        }
    }

    /// What is not the attempt's agent cannot append, a chunk at the wrong offset is answered with the offset
    /// held, and a private build's log does not exist for a caller who may not see it.
    @Test func theLiveLogTakesOnlyItsAgentsAppendsAndHidesPrivateBuilds() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await farm.startMaster(name: "m", lease: 10, acceptTimeout: 10)
            let url = farm.masterURLs[0]
            let id = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                         sourceName: "secretlog", sourceVersion: "1.0", archive: .private))
            let append = try await runBlocking {
                try SimpleHTTPClient.send(method: "PATCH", url: url + "/v1/builds/\(id)/attempts/1/log",
                                          headers: ["Authorization": "Bearer not-the-agents-key", "X-Log-Offset": "0"],
                                          body: .bytes(Array("forged line\n".utf8)), timeoutSeconds: 20)
            }
            #expect(append.status == 403, "\(append.status) \(append.text)")
            #expect(!FileManager.default.fileExists(atPath: farm.artifactRoot + "/live/\(id)-1.log"), "nothing was appended")
            // Private: no such build to an anonymous reader, the log to an admin.
            let anonymous = try await Self.get(url + "/v1/builds/\(id)/log")
            #expect(anonymous.status == 404, "\(anonymous.status) \(anonymous.text)")
            let admin = try await store.addToken(name: "logs-admin", role: .admin)
            let seen = try await Self.get(url + "/v1/builds/\(id)/log", headers: ["Authorization": "Bearer \(admin)"])
            #expect(seen.status == 200 && seen.headers["x-log-complete"] == "false")

            // The store's side: an append that is not at the end is refused with what it holds, and nothing changes.
            let artifacts = try ArtifactStore(root: farm.artifactRoot)
            #expect(try artifacts.appendLive(buildID: id, attempt: 1, offset: 0, bytes: Array("one\n".utf8), maxBytes: 100) == 4)
            #expect(throws: ArtifactStore.LiveOffsetMismatch.self) {
                try artifacts.appendLive(buildID: id, attempt: 1, offset: 0, bytes: Array("one\n".utf8), maxBytes: 100)
            }
            #expect(throws: ArtifactStore.Failure.self) {
                try artifacts.appendLive(buildID: id, attempt: 1, offset: 4, bytes: [UInt8](repeating: 65, count: 97), maxBytes: 100)
            }
            #expect(artifacts.liveSize(buildID: id, attempt: 1) == 4)
            #expect(throws: ArtifactStore.Failure.self) {
                try artifacts.commitLive(buildID: id, attempt: 1, expectedSHA256: String(repeating: "0", count: 64))
            }
            let digest = SHA256.hex(of: Array("one\n".utf8))
            #expect(try artifacts.commitLive(buildID: id, attempt: 1, expectedSHA256: digest) == (digest, 4))
            #expect(artifacts.liveSize(buildID: id, attempt: 1) == nil && artifacts.exists(sha256: digest))
        }
    }
}
