import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// Every authenticated route refuses what it must, against a real master: result uploads and source
/// downloads (per-attempt tokens: missing, wrong, stale attempt; wrong checksum, a name that leaves its
/// folder, a file over the limit) and the JSON API's changing routes (API tokens: missing, wrong, revoked).
/// Each refusal is checked for its status, for nothing stored or changed, and for the metric and log line
/// it leaves; a positive control shows the same request with the right credentials goes through.
@Suite(.serialized, .timeLimit(.minutes(3))) struct RefusalTests {
    struct Reply { let status: Int; let text: String }

    static func send(_ method: String, _ url: String, headers: [String: String] = [:], body: [UInt8] = []) async throws
        -> Reply {
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: method, url: url, headers: headers,
                                      body: body.isEmpty && method == "GET" ? .none : .bytes(body), timeoutSeconds: 10)
        }
        return Reply(status: response.status, text: response.text)
    }

    /// `buildd_http_refused_total{route, reason}` as the master exports it (0 before the first).
    static func refusals(_ farm: FarmHarness, route: String, reason: String) async throws -> Double {
        metricSample(try await farm.metricsText(), "buildd_http_refused_total", ["route": route, "reason": reason]) ?? 0
    }

    /// Sends a request that must be refused with `status`, and checks the refusal's metric and log line.
    static func expectRefused(_ farm: FarmHarness, _ what: String, route: String, reason: String, status: Int,
                              _ request: () async throws -> Reply) async throws {
        let before = try await refusals(farm, route: route, reason: reason)
        let logged = farm.log("master").components(separatedBy: "refusal.reason=\(reason)").count
        let reply = try await request()
        #expect(reply.status == status, "\(what): HTTP \(reply.status) \(reply.text)")
        #expect(try await refusals(farm, route: route, reason: reason) == before + 1,
                "\(what): buildd_http_refused_total{route=\(route),reason=\(reason)} counts it")
        // Logged while under NoiseRule's bound for its route and reason (the metric counts them all).
        guard before < Double(NoiseRule.linesPerMinute) else { return }
        let logCaught = try await eventually(timeout: .seconds(5)) {
            farm.log("master").components(separatedBy: "refusal.reason=\(reason)").count == logged + 1
        }
        #expect(logCaught, "\(what): one `request refused` log line with refusal.reason=\(reason)")
    }

    @Test func uploadsAndSourceDownloadsNeedTheKeyTheAcceptingBuilderDeclared() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try FileManager.default.createDirectory(atPath: farm.artifactRoot, withIntermediateDirectories: true)
            let sourcePath = farm.directory + "/hello_1.0.dsc"
            try Data("Source: hello\nVersion: 1.0\n".utf8).write(to: URL(fileURLWithPath: sourcePath))
            let artifacts = try ArtifactStore(root: farm.artifactRoot)
            let source = try artifacts.importFile(at: sourcePath, name: "hello_1.0.dsc")
            let id = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "hello", sourceVersion: "1.0",
                                                              sourceFiles: [source]))
            // The test claims as a master would, for a builder it makes look idle, twice: attempt 1's token is
            // then stale. Only then the master starts, with no look-ahead: the claim in flight fills the
            // builder's window, so it claims nothing itself.
            for name in ["ref-b1", "ref-b2"] {
                try await farm.store.addBuilder(name: name, processors: ["amd64"], brokerUser: name)
            }
            let url = farm.database.url
            try await runBlocking {
                _ = try PostgresConnection(url: url).execute(
                    "UPDATE builder SET agent_state = 'IDLE', last_seen = now() WHERE name LIKE 'ref-b%'")
            }
            let port = try FarmHarness.freePort()
            let base = "http://127.0.0.1:\(port)"
            func claim() async throws -> JobMessage {
                try #require(try await farm.store.claimJobs(processor: "amd64", lookahead: 0, leaseSeconds: 60,
                                                            artifactBaseURL: base).first)
            }
            let stale = try await claim()
            try await farm.store.releaseClaim(buildID: id, attempt: stale.attempt)
            let job = try await claim()
            #expect(stale.attempt == 1 && job.buildID == id && job.attempt == 2)
            try await farm.startMaster(acceptTimeout: 300, port: port,
                                       arguments: ["--lookahead", "0", "--max-artifact-bytes", "4096"])
            // The builder that accepts attempt 2 declares its key's digest; until that accept is applied, no key
            // opens the attempt, not even that one.
            let key = randomHexToken(bytes: 32), otherKey = randomHexToken(bytes: 32)
            func accept(_ builder: String, _ key: String) async throws -> EventOutcome {
                try await farm.store.apply(AgentEvent(kind: .accepted, builder: builder, session: "s-\(builder)", seq: 1,
                                                      state: .building, buildID: id, attempt: 2,
                                                      uploadKeySHA256: SHA256.hex(of: key)),
                                           userID: builder, leaseSeconds: 120)
            }
            let content = Array("Package: hello\n".utf8)
            let digest = SHA256.hex(of: content)
            func put(_ attempt: Int32, _ name: String, token: String?, checksum: String? = nil, kind: String = "result",
                     body: [UInt8]? = nil) async throws -> Reply {
                var headers: [String: String] = ["Content-Type": "application/octet-stream"]
                if let token { headers["Authorization"] = "Bearer \(token)" }
                if let checksum { headers["X-Checksum-Sha256"] = checksum }
                return try await Self.send("PUT", "\(base)/v1/builds/\(id)/attempts/\(attempt)/files/\(name)?kind=\(kind)",
                                      headers: headers, body: body ?? content)
            }
            func stored() async throws -> Int {
                try await farm.store.database.query("SELECT count(*) AS n FROM build_file WHERE build_id = $1", [id])
                    .first!.int("n")
            }
            let storedBefore = try FileManager.default.subpathsOfDirectory(atPath: farm.artifactRoot + "/sha256").count

            try await Self.expectRefused(farm, "upload before any accept was applied", route: "upload",
                                         reason: "not_accepted_yet", status: 403) {
                try await put(2, "hello.deb", token: key, checksum: digest)
            }
            try await Self.expectRefused(farm, "source before any accept was applied", route: "source",
                                         reason: "not_accepted_yet", status: 403) {
                try await Self.send("GET", "\(base)/v1/builds/\(id)/attempts/2/sources/hello_1.0.dsc",
                                    headers: ["Authorization": "Bearer \(key)"])
            }
            #expect(try await accept("ref-b1", key) == .applied("build \(id) attempt 2 started on ref-b1"))
            // Another builder that read the same job (and so knows the attempt) accepts it too: refused, and
            // its key opens nothing.
            guard case .abort = try await accept("ref-b2", otherKey) else {
                Issue.record("a second builder's accept of a running attempt stood")
                return
            }
            try await Self.expectRefused(farm, "upload without a token", route: "upload", reason: "missing_token",
                                         status: 401) { try await put(2, "hello.deb", token: nil, checksum: digest) }
            try await Self.expectRefused(farm, "upload with a wrong token", route: "upload", reason: "token_refused",
                                         status: 403) {
                try await put(2, "hello.deb", token: "not-the-token", checksum: digest)
            }
            try await Self.expectRefused(farm, "upload with another builder's key", route: "upload",
                                         reason: "token_refused", status: 403) {
                try await put(2, "hello.deb", token: otherKey, checksum: digest)
            }
            try await Self.expectRefused(farm, "upload for an attempt that is not the key's", route: "upload",
                                         reason: "token_refused", status: 403) {
                try await put(1, "hello.deb", token: key, checksum: digest)
            }
            try await Self.expectRefused(farm, "upload without a checksum", route: "upload",
                                         reason: "bad_checksum_header", status: 400) {
                try await put(2, "hello.deb", token: key)
            }
            try await Self.expectRefused(farm, "upload whose bytes are not its checksum's", route: "upload",
                                         reason: "checksum_mismatch", status: 422) {
                try await put(2, "hello.deb", token: key, checksum: SHA256.hex(of: Array("other".utf8)))
            }
            for name in ["..%2F..%2Fetc%2Fpasswd", ".hidden", "a%2Fb"] {
                try await Self.expectRefused(farm, "upload named \(name)", route: "upload", reason: "bad_name",
                                             status: 400) {
                    try await put(2, name, token: key, checksum: digest)
                }
            }
            try await Self.expectRefused(farm, "upload over --max-artifact-bytes", route: "upload", reason: "too_large",
                                         status: 413) {
                let big = [UInt8](repeating: 7, count: 5000)
                return try await put(2, "big.deb", token: key, checksum: SHA256.hex(of: big), body: big)
            }
            try await Self.expectRefused(farm, "upload of an unknown kind", route: "upload", reason: "bad_kind",
                                         status: 400) {
                try await put(2, "hello.deb", token: key, checksum: digest, kind: "secret")
            }
            #expect(try await stored() == 0, "no refused upload is recorded")
            #expect(try FileManager.default.subpathsOfDirectory(atPath: farm.artifactRoot + "/sha256").count == storedBefore,
                    "no refused upload reaches the store")
            #expect(try FileManager.default.contentsOfDirectory(atPath: farm.artifactRoot + "/tmp").isEmpty,
                    "no refused upload leaves a temporary file")

            // Source downloads take the same key.
            let sourceURL = "\(base)/v1/builds/\(id)/attempts/2/sources/hello_1.0.dsc"
            try await Self.expectRefused(farm, "source without a token", route: "source", reason: "missing_token",
                                         status: 401) { try await Self.send("GET", sourceURL) }
            try await Self.expectRefused(farm, "source with a wrong token", route: "source", reason: "token_refused",
                                         status: 403) {
                try await Self.send("GET", sourceURL, headers: ["Authorization": "Bearer not-the-token"])
            }
            try await Self.expectRefused(farm, "source with another builder's key", route: "source",
                                         reason: "token_refused", status: 403) {
                try await Self.send("GET", sourceURL, headers: ["Authorization": "Bearer \(otherKey)"])
            }
            try await Self.expectRefused(farm, "source of attempt 1 (stale) with the key", route: "source",
                                         reason: "token_refused", status: 403) {
                try await Self.send("GET", "\(base)/v1/builds/\(id)/attempts/1/sources/hello_1.0.dsc",
                                    headers: ["Authorization": "Bearer \(key)"])
            }
            try await Self.expectRefused(farm, "source by a name that leaves its folder", route: "source",
                                         reason: "bad_name", status: 400) {
                try await Self.send("GET", "\(base)/v1/builds/\(id)/attempts/2/sources/..%2Fhello_1.0.dsc",
                                    headers: ["Authorization": "Bearer \(key)"])
            }
            let fetched = try await Self.send("GET", sourceURL, headers: ["Authorization": "Bearer \(key)"])
            #expect(fetched.status == 200 && fetched.text == "Source: hello\nVersion: 1.0\n", "the key fetches")
            let basic = Data("buildd:\(key)".utf8).base64EncodedString()
            #expect(try await Self.send("GET", sourceURL, headers: ["Authorization": "Basic \(basic)"]).status == 200,
                    "launchpad-buildd's ensurepresent sends it as the Basic password")

            // The right upload goes through: the checks above refused for their reason, not every request.
            let good = try await put(2, "hello.deb", token: key, checksum: digest)
            #expect(good.status == 201, "\(good.text)")
            #expect(try await stored() == 1)
            let log = farm.log("master")
            #expect(!log.contains(key) && !log.contains(otherKey), "keys never reach the log")
        }
    }

    @Test func everyChangingAPIRouteNeedsALiveToken() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "api-b1", processors: ["amd64"], brokerUser: "api-b1")
            let waiting = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble",
                                                                   archTag: "amd64", sourceName: "waits",
                                                                   sourceVersion: "1.0"))
            let failed = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble",
                                                                  archTag: "amd64", sourceName: "ended",
                                                                  sourceVersion: "1.0"))
            #expect(try await farm.store.cancel(failed) == .cancelled)
            let revoked = try await farm.store.addToken(name: "gone", role: .operator)
            try await farm.store.removeToken(name: "gone")
            let live = try await farm.store.addToken(name: "live", role: .operator)
            try await farm.startMaster(arguments: ["--lookahead", "0"])
            let base = farm.masterURLs[0]
            let routes: [(String, String)] = [
                ("/v1/builds/\(waiting)/cancel", "{}"), ("/v1/builds/\(failed)/retry", "{}"),
                ("/v1/builds/\(waiting)/rescore", #"{"score": 9000}"#),
                ("/v1/builders/api-b1/disable", #"{"reason": "not you"}"#),
                ("/v1/builders/api-b1/enable", "{}"), ("/v1/builders/api-b1/manual", #"{"manual": true}"#),
            ]
            func snapshot() async throws -> String {
                let builds = try await farm.store.builds(statuses: [], processor: nil, limit: 10)
                    .map { "\($0.id):\($0.status.rawValue):\($0.score.map { "\($0)" } ?? "-")" }
                let builders = try await farm.store.builders().map { "\($0.name):\($0.builderok):\($0.manual)" }
                return (builds + builders).joined(separator: " ")
            }
            let before = try await snapshot()
            for (path, body) in routes {
                let post: (String?) async throws -> Reply = { token in
                    var headers = ["Content-Type": "application/json"]
                    if let token { headers["Authorization"] = "Bearer \(token)" }
                    return try await Self.send("POST", base + path, headers: headers, body: Array(body.utf8))
                }
                try await Self.expectRefused(farm, "\(path) without a token", route: "api", reason: "missing_token",
                                             status: 401) { try await post(nil) }
                try await Self.expectRefused(farm, "\(path) with a wrong token", route: "api", reason: "token_refused",
                                             status: 403) { try await post("bdt_not-a-token") }
                try await Self.expectRefused(farm, "\(path) with a revoked token", route: "api", reason: "token_refused",
                                             status: 403) { try await post(revoked) }
                #expect(try await snapshot() == before, "\(path): a refused request changes nothing")
            }
            // The live token works on one of them (the refusals were about the token).
            let done = try await Self.send("POST", base + "/v1/builds/\(waiting)/rescore", headers: [
                "Content-Type": "application/json", "Authorization": "Bearer \(live)"], body: Array(#"{"score": 9000}"#.utf8))
            #expect(done.status == 200, "\(done.text)")
            #expect(try await snapshot() != before)
        }
    }
}
