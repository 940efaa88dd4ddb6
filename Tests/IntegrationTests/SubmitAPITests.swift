import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Submitting over the network, as an archive's upload processor or a CI system does: source files uploaded by
/// digest, the build submitted by the CLI with `--master` alone (no database URL anywhere in its
/// environment), a retried submit that makes one build also when another master answers it, and the build
/// list paged by cursor while builds arrive. Real PostgreSQL, RabbitMQ, masters over HTTPS and an agent.
@Suite(.serialized, .timeLimit(.minutes(6))) struct SubmitAPITests {
    typealias Answer = (status: Int, text: String, headers: [String: String])

    static func send(_ farm: FarmHarness, _ method: String, _ path: String, token: String?, master: Int = 0,
                     headers: [String: String] = [:], body: SimpleHTTPClient.Body = .none) async throws -> Answer {
        let url = farm.masterURLs[master] + path
        var all = headers
        if let token { all["Authorization"] = "Bearer \(token)" }
        let sent = all, trust = farm.trust
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: method, url: url, headers: sent, body: body, timeoutSeconds: 20, trust: trust)
        }
        return (response.status, response.text, response.headers)
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// The message of an API error answer.
    static func message(_ answer: Answer) -> String {
        ((json(answer.text)["error"] as? [String: Any])?["message"] as? String) ?? answer.text
    }

    /// A small source package on disk: a tarball and a `.dsc` listing it (name, version, SHA-256, size).
    static func sourcePackage(in folder: String, name: String = "apipkg", version: String = "1.0",
                              tarballBytes: Int = 3000) throws -> (dsc: String, tarball: String) {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let tarball = "\(folder)/\(name)_\(version).tar.xz"
        var generator = SystemRandomNumberGenerator()
        try Data((0..<tarballBytes).map { _ in UInt8.random(in: 0...255, using: &generator) }).write(to: URL(fileURLWithPath: tarball))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: tarball))
        let dsc = """
            Format: 3.0 (native)
            Source: \(name)
            Binary: \(name)
            Version: \(version)
            Checksums-Sha256:
             \(SHA256.hex(of: Array(bytes))) \(bytes.count) \(name)_\(version).tar.xz

            """
        let dscPath = "\(folder)/\(name)_\(version).dsc"
        try dsc.write(toFile: dscPath, atomically: true, encoding: .utf8)
        return (dscPath, tarball)
    }

    static func digest(_ path: String) throws -> FileDigest {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        return FileDigest(name: (path as NSString).lastPathComponent, sha256: SHA256.hex(of: bytes), size: Int64(bytes.count))
    }

    /// Files in the store's upload area: an upload that failed or broke off must leave none.
    static func partialUploads(_ farm: FarmHarness) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: farm.artifactRoot + "/tmp")) ?? []
    }

    static func submitBody(_ files: [FileDigest], source: String = "apipkg", version: String = "1.0",
                           archseries: String = "ubuntu/noble/amd64", extra: String = "") -> String {
        let list = files.map { #"{"name": "\#($0.name)", "sha256": "\#($0.sha256)", "size": \#($0.size)}"# }.joined(separator: ", ")
        return #"{"archseries": "\#(archseries)", "source": "\#(source)", "version": "\#(version)"\#(extra), "files": [\#(list)]}"#
    }

    @Test func theCLISubmitsOverHTTPSWithTheMasterAloneAndTheBuildRunsOnAnAgent() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addProcessor("amd64")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
            try await farm.store.addBuilder(name: "api-agent", processors: ["amd64"], brokerUser: "guest")
            try await farm.startMaster()
            try farm.startAgent("api-agent", processors: ["amd64"])
            let token = try await farm.store.addToken(name: "uploader", role: .submitter)
            let package = try Self.sourcePackage(in: farm.directory + "/src", tarballBytes: 6 << 20)
            // Only the master's URL, the token and the CA: no database, broker or artifact directory.
            let environment = ["BUILDD_DATABASE_URL": "", "BUILDD_BROKER_URL": "", "BUILDD_ARTIFACTS": "", "BUILDD_CONFIG": "/dev/null",
                               "BUILDD_MASTER_URL": farm.masterURLs[0], "BUILDD_TOKEN": token]
            let binary = try TestEnvironment.binDirectory + "/buildd-master"
            let submitted = try await FarmHarness.run(binary, [
                "build", "submit", "ubuntu/noble/amd64", "apipkg", "1.0", "--dsc", package.dsc,
                "--ca-file", try #require(farm.tls?.ca), "--wait", "--urgency", "high",
            ], environment: environment, timeout: .seconds(120))
            #expect(submitted.status == 0, "submit --wait: \(submitted.error)")
            let line = submitted.output.split(separator: "\n").last.map(String.init) ?? ""
            #expect(line.hasSuffix(" FULLYBUILT"), "\(submitted.output)")
            let id = try #require(Int64(line.split(separator: " ").first ?? ""), "\(submitted.output)")
            // The large file's upload showed its progress.
            #expect(submitted.error.contains("uploading apipkg_1.0.tar.xz: 50%"), "\(submitted.error)")
            let built = try await farm.store.build(id)
            #expect(built.build.status == .fullyBuilt, "\(built.history)")
            #expect(built.urgency == "high")
            #expect(built.history.first?.actor == "uploader", "the token is the submit's actor: \(built.history)")
            let sources = try await farm.store.database.query("SELECT name, sha256 FROM source_file WHERE build_id = $1 ORDER BY name", [id])
            #expect(try sources.rows.map { try $0.string("name") } == ["apipkg_1.0.dsc", "apipkg_1.0.tar.xz"])

            // The same sources again: nothing is uploaded twice.
            let again = try await FarmHarness.run(binary, [
                "build", "submit", "ubuntu/noble/amd64", "apipkg", "1.0", "--dsc", package.dsc, "--ca-file", try #require(farm.tls?.ca),
            ], environment: environment, timeout: .seconds(60))
            #expect(again.status == 0, "\(again.error)")
            #expect(again.error.contains("apipkg_1.0.tar.xz: the farm has it already"), "\(again.error)")

            // A viewer's token may not submit: refused, exit 77, nothing queued.
            let viewer = try await farm.store.addToken(name: "looker", role: .viewer)
            let before = try await farm.store.builds(statuses: [], processor: nil, limit: 100).count
            let refused = try await FarmHarness.run(binary, [
                "build", "submit", "ubuntu/noble/amd64", "apipkg", "1.0", "--dsc", package.dsc, "--ca-file", try #require(farm.tls?.ca),
                "--token", viewer,
            ], environment: environment, timeout: .seconds(60))
            #expect(refused.status == 77 && refused.error.contains("submit needs submitter"), "\(refused)")
            #expect(try await farm.store.builds(statuses: [], processor: nil, limit: 100).count == before)
            // Without any master named, the CLI says what it needs rather than reaching for a database.
            let nowhere = try await FarmHarness.run(binary, ["build", "submit", "ubuntu/noble/amd64", "apipkg", "1.0", "--dsc", package.dsc],
                                                    environment: ["BUILDD_DATABASE_URL": "", "BUILDD_MASTER_URL": "", "BUILDD_ARTIFACTS": "",
                                                                  "BUILDD_CONFIG": "/dev/null"])
            #expect(nowhere.status != 0 && nowhere.error.contains("--artifacts"), "\(nowhere)")
        }
    }

    /// The CLI's other commands with a master's URL and a token, and nothing of the farm's database or store.
    @Test func theCLIsOtherCommandsWorkOverTheAPIWithoutTheDatabase() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "cli-box", processors: ["amd64"], brokerUser: "guest")
            try await farm.startMaster()
            let id = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                              sourceName: "clipkg", sourceVersion: "1.0"))
            let operatorToken = try await farm.store.addToken(name: "night-shift", role: .operator)
            let viewer = try await farm.store.addToken(name: "looker", role: .viewer)
            let binary = try TestEnvironment.binDirectory + "/buildd-master"
            let ca = try #require(farm.tls?.ca)
            func cli(_ arguments: String..., token: String) async throws -> (status: Int32, output: String, error: String) {
                try await FarmHarness.run(binary, arguments + ["--ca-file", ca], environment: [
                    "BUILDD_DATABASE_URL": "", "BUILDD_BROKER_URL": "", "BUILDD_ARTIFACTS": "", "BUILDD_CONFIG": "/dev/null",
                    "BUILDD_MASTER_URL": farm.masterURLs[0], "BUILDD_TOKEN": token])
            }
            let listed = try await cli("build", "list", "--status", "NEEDSBUILD", token: viewer)
            #expect(listed.status == 0 && listed.output.contains("clipkg"), "\(listed)")
            let shown = try await cli("build", "show", "\(id)", token: viewer)
            #expect(shown.status == 0 && shown.output.contains("status:    NEEDSBUILD"), "\(shown)")
            let noLog = try await cli("build", "log", "\(id)", token: viewer)
            #expect(noLog.status == 1 && noLog.error.contains("has no log yet"), "\(noLog)")
            // A viewer may read, not change: exit 77, nothing changed.
            let refused = try await cli("build", "cancel", "\(id)", token: viewer)
            #expect(refused.status == 77 && refused.error.contains("cancel needs operator"), "\(refused)")
            #expect(try await farm.store.build(id).build.status == .needsBuild)

            let rescored = try await cli("build", "rescore", "\(id)", "9000", token: operatorToken)
            #expect(rescored.status == 0 && rescored.output.contains("score 9000 (manual)"), "\(rescored)")
            #expect(try await farm.store.build(id).build.score == 9000)
            let cancelled = try await cli("build", "cancel", "\(id)", token: operatorToken)
            #expect(cancelled.status == 0 && cancelled.output.contains("CANCELLED"), "\(cancelled)")
            let retried = try await cli("build", "retry", "\(id)", token: operatorToken)
            #expect(retried.status == 0 && retried.output.contains("NEEDSBUILD"), "\(retried)")
            let history = try await farm.store.build(id).history
            #expect(history.contains { $0.status == "CANCELLED" && $0.actor == "night-shift" }, "\(history)")
            // A build that does not exist: exit 66.
            #expect(try await cli("build", "show", "999999", token: viewer).status == 66)

            let builders = try await cli("builder", "list", token: viewer)
            #expect(builders.status == 0 && builders.output.contains("cli-box"), "\(builders)")
            let disabled = try await cli("builder", "disable", "cli-box", "--reason", "disk swap", token: operatorToken)
            #expect(disabled.status == 0, "\(disabled)")
            #expect(try await farm.store.builders().first { $0.name == "cli-box" }?.builderok == false)
            #expect(try await cli("builder", "enable", "cli-box", token: operatorToken).status == 0)
            #expect(try await farm.store.builders().first { $0.name == "cli-box" }?.builderok == true)
            #expect(try await cli("builder", "manual", "cli-box", "on", token: operatorToken).status == 0)
            let builder = try await cli("builder", "show", "cli-box", token: viewer)
            #expect(builder.status == 0 && builder.output.contains("(manual mode)"), "\(builder)")
        }
    }

    @Test func uploadsAreCheckedStoredOnceAndLeaveNothingWhenRefusedOrBrokenOff() async throws {
        try await FarmHarness.with { farm in
            try await farm.startMaster(arguments: ["--max-upload", "100000"])
            let token = try await farm.store.addToken(name: "uploader", role: .submitter)
            let package = try Self.sourcePackage(in: farm.directory + "/src")
            let tarball = try Self.digest(package.tarball)

            // No token, and a token below submitter: refused before a byte is stored.
            #expect(try await Self.send(farm, "PUT", "/v1/uploads/\(tarball.sha256)", token: nil, body: .file(path: package.tarball)).status == 401)
            let viewer = try await farm.store.addToken(name: "looker", role: .viewer)
            #expect(try await Self.send(farm, "PUT", "/v1/uploads/\(tarball.sha256)", token: viewer, body: .file(path: package.tarball)).status == 403)
            #expect(!ArtifactStoreProbe.holds(farm, tarball.sha256))

            // Bytes that do not hash to the digest named: 422, nothing stored, nothing partial.
            let wrong = String(repeating: "ab", count: 32)
            let mismatch = try await Self.send(farm, "PUT", "/v1/uploads/\(wrong)", token: token, body: .file(path: package.tarball))
            #expect(mismatch.status == 422 && mismatch.text.contains("do not hash"), "\(mismatch)")
            #expect(!ArtifactStoreProbe.holds(farm, wrong) && Self.partialUploads(farm).isEmpty)
            // Not a digest at all.
            #expect(try await Self.send(farm, "PUT", "/v1/uploads/nothex", token: token, body: .bytes([1])).status == 400)

            // Larger than --max-upload: 413, by its declared length and by what it sends.
            let big = farm.directory + "/big.bin"
            try Data(repeating: 7, count: 200_000).write(to: URL(fileURLWithPath: big))
            let bigDigest = try Self.digest(big)
            let tooLarge = try await Self.send(farm, "PUT", "/v1/uploads/\(bigDigest.sha256)", token: token, body: .file(path: big))
            #expect(tooLarge.status == 413 && tooLarge.text.contains("--max-upload"), "\(tooLarge)")
            #expect(!ArtifactStoreProbe.holds(farm, bigDigest.sha256) && Self.partialUploads(farm).isEmpty)

            // Stored once: 201, then 200 with the same digest and size; GET says it is there.
            let first = try await Self.send(farm, "PUT", "/v1/uploads/\(tarball.sha256)", token: token, body: .file(path: package.tarball))
            #expect(first.status == 201 && Self.json(first.text)["size"] as? Int == Int(tarball.size), "\(first)")
            let second = try await Self.send(farm, "PUT", "/v1/uploads/\(tarball.sha256)", token: token, body: .file(path: package.tarball))
            #expect(second.status == 200 && Self.json(second.text)["sha256"] as? String == tarball.sha256, "\(second)")
            #expect(try await Self.send(farm, "GET", "/v1/uploads/\(tarball.sha256)", token: token).status == 200)
            #expect(try await Self.send(farm, "GET", "/v1/uploads/\(wrong)", token: token).status == 404)

            // Broken off halfway: the master keeps nothing of it, and the same upload sent again is stored.
            let dsc = try Self.digest(package.dsc)
            let url = try #require(URLComponents(string: farm.masterURLs[0]))
            let descriptor = try SimpleHTTPClient.connect(host: "127.0.0.1", port: try #require(url.port), timeoutSeconds: 5)
            let dscBytes = Array(try Data(contentsOf: URL(fileURLWithPath: package.dsc)))
            let head = "PUT /v1/uploads/\(dsc.sha256) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\n"
                + "Content-Length: \(dscBytes.count)\r\n\r\n"
            try SimpleHTTPClient.sendAll(descriptor, Array(head.utf8) + Array(dscBytes.prefix(dscBytes.count / 2)))
            try await Task.sleep(for: .milliseconds(300))
            close(descriptor)
            let gone = try await eventually(timeout: .seconds(10)) { Self.partialUploads(farm).isEmpty }
            #expect(gone && !ArtifactStoreProbe.holds(farm, dsc.sha256), "left: \(Self.partialUploads(farm))")
            let restarted = try await Self.send(farm, "PUT", "/v1/uploads/\(dsc.sha256)", token: token, body: .file(path: package.dsc))
            #expect(restarted.status == 201 && ArtifactStoreProbe.holds(farm, dsc.sha256), "\(restarted)")
        }
    }

    @Test func aSubmitRetriedWithItsKeyMakesOneBuildAlsoThroughAnotherMaster() async throws {
        try await FarmHarness.with { farm in
            try await farm.store.addProcessor("amd64")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
            try await farm.startMaster(name: "m1")
            try await farm.startMaster(name: "m2")
            let token = try await farm.store.addToken(name: "ci", role: .submitter)
            let other = try await farm.store.addToken(name: "other-ci", role: .submitter)
            let package = try Self.sourcePackage(in: farm.directory + "/src")
            let files = [try Self.digest(package.dsc), try Self.digest(package.tarball)]
            for (file, path) in zip(files, [package.dsc, package.tarball]) {
                #expect(try await Self.send(farm, "PUT", "/v1/uploads/\(file.sha256)", token: token, body: .file(path: path)).status == 201)
            }
            let body = Self.submitBody(files, extra: #", "urgency": "high""#)
            let json = ["Content-Type": "application/json"]
            let keyed = json.merging(["Idempotency-Key": "upload-4711"]) { $1 }

            // The first answer is lost to the client; it retries on the other master with the same key.
            let created = try await Self.send(farm, "POST", "/v1/builds", token: token, master: 0, headers: keyed, body: .bytes(Array(body.utf8)))
            #expect(created.status == 201, "\(created)")
            let id = try #require((Self.json(created.text)["build"] as? [String: Any])?["id"] as? Int)
            #expect(created.headers["location"] == "/v1/builds/\(id)", "\(created.headers)")
            let retried = try await Self.send(farm, "POST", "/v1/builds", token: token, master: 1, headers: keyed, body: .bytes(Array(body.utf8)))
            #expect(retried.status == 200 && retried.headers["idempotent-replayed"] == "true", "\(retried)")
            #expect((Self.json(retried.text)["build"] as? [String: Any])?["id"] as? Int == id)

            // Two tries at once on the two masters: one build between them.
            let raceKey = json.merging(["Idempotency-Key": "race-1"]) { $1 }
            async let left = Self.send(farm, "POST", "/v1/builds", token: token, master: 0, headers: raceKey, body: .bytes(Array(body.utf8)))
            async let right = Self.send(farm, "POST", "/v1/builds", token: token, master: 1, headers: raceKey, body: .bytes(Array(body.utf8)))
            let answers = try await [left, right]
            let ids = Set(answers.compactMap { (Self.json($0.text)["build"] as? [String: Any])?["id"] as? Int })
            #expect(ids.count == 1 && Set(answers.map(\.status)) == [200, 201], "\(answers)")

            // The same key for another request is refused, and makes nothing.
            let count = try await farm.store.builds(statuses: [], processor: nil, limit: 100).count
            let changed = Self.submitBody(files, extra: #", "urgency": "low""#)
            let reused = try await Self.send(farm, "POST", "/v1/builds", token: token, headers: keyed, body: .bytes(Array(changed.utf8)))
            #expect(reused.status == 422 && reused.text.contains("was used for another submit"), "\(reused)")
            // Another token's key of the same name is its own: a new build.
            let theirs = try await Self.send(farm, "POST", "/v1/builds", token: other, headers: keyed, body: .bytes(Array(body.utf8)))
            #expect(theirs.status == 201, "\(theirs)")
            // Without a key, each submit is a new build.
            #expect(try await Self.send(farm, "POST", "/v1/builds", token: token, headers: json, body: .bytes(Array(body.utf8))).status == 201)
            #expect(try await farm.store.builds(statuses: [], processor: nil, limit: 100).count == count + 2)
        }
    }

    @Test func badSubmitsAreRefusedNamingWhatIsWrongAndQueueNothing() async throws {
        try await FarmHarness.with { farm in
            try await farm.store.addProcessor("amd64")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
            try await farm.startMaster()
            let token = try await farm.store.addToken(name: "ci", role: .submitter)
            let package = try Self.sourcePackage(in: farm.directory + "/src")
            let dsc = try Self.digest(package.dsc), tarball = try Self.digest(package.tarball)
            for (file, path) in zip([dsc, tarball], [package.dsc, package.tarball]) {
                #expect(try await Self.send(farm, "POST", "/v1/builds", token: token).status == 400)  // no body at all
                _ = try await Self.send(farm, "PUT", "/v1/uploads/\(file.sha256)", token: token, body: .file(path: path))
            }
            func post(_ body: String) async throws -> Answer {
                try await Self.send(farm, "POST", "/v1/builds", token: token, headers: ["Content-Type": "application/json"],
                                    body: .bytes(Array(body.utf8)))
            }
            let cases: [(String, Int, String)] = [
                (#"{"archseries": "ubuntu/noble/amd64", "version": "1.0"}"#, 400, "source: missing"),
                (Self.submitBody([dsc, tarball], extra: #", "urgency": "whenever""#), 400, "urgency: one of low, medium, high, emergency"),
                (Self.submitBody([dsc, tarball], archseries: "ubuntu-noble"), 400, "archseries: DISTRIBUTION/SERIES/ARCH"),
                (Self.submitBody([dsc, tarball], source: "Not A Name"), 400, "source: not a Debian source package name"),
                (#"{"archseries": "ubuntu/noble/amd64", "source": "apipkg", "version": "1.0", "files": [{"name": "x", "sha256": "zz", "size": 1}]}"#,
                 400, "files[0].sha256"),
                (Self.submitBody([dsc, tarball], archseries: "ubuntu/plucky/amd64"), 404, "unknown arch series ubuntu/plucky/amd64"),
                (Self.submitBody([dsc, FileDigest(name: "apipkg_1.0.tar.xz", sha256: String(repeating: "0", count: 64), size: 5)]),
                 422, "was not uploaded"),
                (Self.submitBody([dsc, FileDigest(name: tarball.name, sha256: tarball.sha256, size: tarball.size + 1)]), 422,
                 "bytes as uploaded"),
                // The .dsc lists the tarball, which the submit leaves out; or names another version.
                (Self.submitBody([dsc]), 422, "apipkg_1.0.tar.xz is listed but not given"),
                (Self.submitBody([dsc, tarball], version: "2.0"), 422, "it is apipkg 1.0, not apipkg 2.0"),
            ]
            for (body, status, words) in cases {
                let answer = try await post(body)
                #expect(answer.status == status && Self.message(answer).contains(words), "\(body) -> \(answer.status) \(answer.text)")
            }
            // A tarball that does not match the .dsc's digest (another file of the right name) is refused too.
            let forged = farm.directory + "/forged/apipkg_1.0.tar.xz"
            try FileManager.default.createDirectory(atPath: farm.directory + "/forged", withIntermediateDirectories: true)
            try Data(repeating: 1, count: 100).write(to: URL(fileURLWithPath: forged))
            let forgedDigest = try Self.digest(forged)
            _ = try await Self.send(farm, "PUT", "/v1/uploads/\(forgedDigest.sha256)", token: token, body: .file(path: forged))
            let mismatch = try await post(Self.submitBody([dsc, forgedDigest]))
            #expect(mismatch.status == 422 && Self.message(mismatch).contains("does not match the .dsc"), "\(mismatch)")
            #expect(try await farm.store.builds(statuses: [], processor: nil, limit: 10).isEmpty, "a refused submit queued a build")
        }
    }

    @Test func pagingThroughTenThousandBuildsWhileMoreArriveSeesEachOnce() async throws {
        try await FarmHarness.with { farm in
            try await farm.store.addProcessor("amd64")
            try await farm.store.addProcessor("arm64")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "amd64", processor: "amd64")
            try await farm.store.addArchSeries(distribution: "ubuntu", series: "noble", archTag: "arm64", processor: "arm64")
            try await farm.startMaster()
            _ = try await farm.store.database.query("""
                WITH b AS (
                    INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version, archive_purpose)
                    SELECT das.id, das.processor_id, CASE WHEN g % 10 = 0 THEN 'tenth' ELSE 'page' END, '1.0-' || g,
                           CASE WHEN g % 100 = 0 THEN 'private' ELSE 'primary' END
                      FROM generate_series(1, 10000) g
                      JOIN distroarchseries das ON das.architecturetag = CASE WHEN g % 2 = 0 THEN 'arm64' ELSE 'amd64' END
                    RETURNING id, processor_id)
                INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore) SELECT id, processor_id, 1, 1 FROM b
                """)
            let viewer = try await farm.store.addToken(name: "reader", role: .viewer)
            let original = Set(try await farm.store.database.query("SELECT id FROM build").rows.map { try $0.int64("id") })
            #expect(original.count == 10_000)

            // New builds keep arriving while the client pages, newest first and oldest first.
            let arriving = Task {
                var made: [Int64] = []
                while !Task.isCancelled {
                    made.append(try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                         sourceName: "late", sourceVersion: "1.0-\(made.count)")))
                    try? await Task.sleep(for: .milliseconds(5))
                }
                return made
            }
            func page(through path: String) async throws -> [Int64] {
                var seen: [Int64] = []
                var next: String? = path
                while let current = next {
                    let answer = try await Self.send(farm, "GET", current, token: viewer)
                    #expect(answer.status == 200, "\(current): \(answer.text)")
                    let builds = (try JSONSerialization.jsonObject(with: Data(answer.text.utf8)) as? [[String: Any]]) ?? []
                    seen += builds.compactMap { ($0["id"] as? Int).map(Int64.init) }
                    next = answer.headers["link"].flatMap { link in
                        link.firstRange(of: "<").flatMap { open in link.firstRange(of: ">").map { String(link[open.upperBound..<$0.lowerBound]) } }
                    }
                    #expect(next == nil || answer.headers["x-next-cursor"] != nil)
                }
                return seen
            }
            let newest = try await page(through: "/v1/builds?limit=700")
            let oldest = try await page(through: "/v1/builds?limit=700&order=oldest")
            arriving.cancel()
            let late = Set(try await arriving.value)
            #expect(late.count > 10, "only \(late.count) builds arrived while paging")
            for (name, seen) in [("newest first", newest), ("oldest first", oldest)] {
                #expect(Set(seen).count == seen.count, "\(name): \(seen.count - Set(seen).count) builds listed twice")
                #expect(original.isSubset(of: Set(seen)), "\(name): \(original.subtracting(seen).count) builds never listed")
                #expect(Set(seen).subtracting(original.union(late)).isEmpty, "\(name): listed builds that do not exist")
            }
            // Oldest first reaches the builds that arrived before its last page: picking up from a cursor finds them.
            #expect(!Set(oldest).intersection(late).isEmpty, "oldest first saw none of \(late.count) late builds")

            // Filters narrow the list; a private build is left out for the anonymous caller.
            let tenth = try await page(through: "/v1/builds?source=tenth&processor=arm64&limit=10000")
            #expect(tenth.count == 1000)
            let privateOnes = try await page(through: "/v1/builds?archive=private&limit=10000")
            #expect(privateOnes.count == 100)
            let anonymous = try await Self.send(farm, "GET", "/v1/builds?archive=private", token: nil)
            #expect(anonymous.status == 200 && anonymous.text == "[]", "\(anonymous.text.prefix(200))")
            let future = try await Self.send(farm, "GET", "/v1/builds?since=2999-01-01T00:00:00Z", token: viewer)
            #expect(future.text == "[]")
            #expect(try await Self.send(farm, "GET", "/v1/builds?since=yesterday", token: viewer).status == 400)
            #expect(try await Self.send(farm, "GET", "/v1/builds?cursor=x12", token: viewer).status == 400)
        }
    }
}

/// Whether the farm's artifact store holds a blob (read from the disk, not through the API).
enum ArtifactStoreProbe {
    static func holds(_ farm: FarmHarness, _ sha256: String) -> Bool {
        FileManager.default.fileExists(atPath: "\(farm.artifactRoot)/sha256/\(sha256.prefix(2))/\(sha256)")
    }
}
