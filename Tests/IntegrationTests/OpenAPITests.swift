import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// docs/openapi.yaml against a running master: every route the master registers is described and every
/// described operation is a route; each of some forty requests answers with a status the description lists,
/// with a body its schema accepts (Tests/Support/openapi-check.py). Real PostgreSQL, RabbitMQ, master and agent.
@Suite(.serialized, .timeLimit(.minutes(4))) struct OpenAPITests {
    @Test func theDescriptionMatchesWhatTheMasterAnswers() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64", "arm64"])
            try await store.addBuilder(name: "spec-box", processors: ["amd64"], brokerUser: "guest")
            try await farm.startMaster()
            try farm.startAgent("spec-box", processors: ["amd64"], sampleSeconds: 0.05)
            let built = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                            sourceName: "specdone", sourceVersion: "1.0"))
            // No builder takes arm64: this one waits.
            let waiting = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "arm64",
                                                              sourceName: "specwait", sourceVersion: "1.0"))
            #expect(try await eventually(timeout: .seconds(60)) { try await store.build(built).build.status == .fullyBuilt })
            let log = try #require(try await store.build(built).files.first { $0.kind == "log" }?.name)
            var tokens: [String: String] = [:]
            for role in [Role.viewer, .submitter, .operator, .admin] {
                tokens[role.rawValue] = try await store.addToken(name: "spec-\(role.rawValue)", role: role)
            }
            let upload = farm.directory + "/specpkg_1.0.tar.xz"
            try Data("not really a tarball \(randomHexToken(bytes: 8))\n".utf8).write(to: URL(fileURLWithPath: upload))
            let fixtures: [String: Any] = [
                "base": farm.masterURLs[0], "tokens": tokens, "build": built, "log": log, "waiting": waiting,
                "builder": "spec-box", "processor": "arm64", "upload_path": upload, "archseries": "ubuntu/noble/amd64",
            ]
            let fixturesPath = farm.directory + "/openapi-fixtures.json"
            try JSONSerialization.data(withJSONObject: fixtures).write(to: URL(fileURLWithPath: fixturesPath))
            let checked = try await FarmHarness.run("/usr/bin/env", [
                "python3", FarmHarness.repositoryFile("Tests/Support/openapi-check.py"), FarmHarness.repositoryFile("docs/openapi.yaml"),
                FarmHarness.repositoryFile("Sources/Master/BuilddMaster"), fixturesPath,
            ], timeout: .seconds(120))
            #expect(checked.status == 0, "\(checked.output)\n\(checked.error)")
            #expect(checked.output.contains("PASS"))
        }
    }
}
