import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// HTTPS between agents and masters, with private CAs made by the test: the master serves TLS, clients
/// check the chain and the host, and an agent that cannot check a master's certificate sends it nothing.
@Suite(.serialized, .timeLimit(.minutes(5))) struct TLSTests {
    static func get(_ url: String, trust: TLSTrust) async throws -> SimpleHTTPClient.Response {
        try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 10, trust: trust) }
    }

    @Test func theMasterServesHTTPSThatClientsCheckByChainAndHost() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.startMaster()
            let base = try #require(farm.masterURLs.first)
            #expect(base.hasPrefix("https://"))
            #expect(try await Self.get(base + "/v1/processors", trust: farm.trust).status == 200)

            // The system's store does not know the farm's CA.
            await #expect { try await Self.get(base + "/healthz", trust: .system) } throws: { error in
                "\(error)".contains("not trusted")
            }
            // Another CA's trust refuses it too.
            let other = try FarmHarness.makeCertificates(in: farm.directory + "/other-ca", names: ["IP:127.0.0.1"],
                                                         commonName: "another CA")
            await #expect { try await Self.get(base + "/healthz", trust: try TLSTrust(caFile: other.ca)) } throws: { error in
                "\(error)".contains("not trusted")
            }
            // A certificate from the right CA for another host: the name is checked, not only the chain.
            let port = try #require(URLComponents(string: base)?.port)
            #expect(try await Self.get("https://localhost:\(port)/healthz", trust: farm.trust).status == 200,
                    "the certificate names localhost too")
            let wrongHost = try FarmHarness.makeCertificates(in: farm.directory + "/wrong-host", names: ["DNS:elsewhere.example"])
            let elsewhere = try await farm.startOtherMaster(certificate: wrongHost)
            await #expect {
                try await Self.get("https://127.0.0.1:\(elsewhere)/healthz", trust: try TLSTrust(caFile: wrongHost.ca))
            } throws: { error in "\(error)".contains("not trusted") }
            // Plain http to the TLS port gets no answer it could read.
            await #expect(throws: (any Error).self) {
                try await Self.get("http://127.0.0.1:\(port)/healthz", trust: farm.trust)
            }
        }
    }

    @Test func anAgentThatCannotCheckTheMastersCertificateSendsItNothing() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "wrong-ca", processors: ["amd64"])
            try await farm.startMaster()
            let other = try FarmHarness.makeCertificates(in: farm.directory + "/agent-ca", names: ["IP:127.0.0.1"],
                                                         commonName: "another agent CA")
            try farm.startAgent("wrong-ca", processors: ["amd64"], sampleSeconds: 0.2,
                                caFile: other.ca)
            let build = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                 sourceName: "hello", sourceVersion: "1.0"))
            #expect(try await eventually(timeout: .seconds(60)) { farm.log("wrong-ca").contains("is not trusted") },
                    "the agent says why it cannot upload: \(farm.log("wrong-ca"))")
            let detail = try await farm.store.build(build)
            #expect(detail.files.isEmpty, "nothing was uploaded")
            #expect(detail.build.status != .fullyBuilt)
        }
    }
}
