import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// An enrolling machine names itself: a name that is a broker user already - the masters' own, the user
/// that enrols machines, one made by hand - must not let it reset that user's password or rights. Found by
/// the last read of issue 26's change: the first version PUT the user whatever it was.
@Suite(.serialized, .timeLimit(.minutes(3))) struct EnrolmentNameTests {
    @Test func aMachineCannotEnrolAsABrokerUserThatExists() async throws {
        try await EnrolmentTests.withEnrollingMaster(processors: ["amd64"], users: ["rightful-1"]) { farm, management in
            let ca = try #require(farm.tls?.ca)
            let made = try await farm.cli("token", "add", "rack-9", "--role", "enrol", "--expires", "1h", "--processor", "amd64")
            let token = made.output.trimmingCharacters(in: .whitespacesAndNewlines)
            func user(_ name: String) async throws -> String {
                try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: management + "/api/users/\(name)").text }
            }
            // guest is the user this farm's master and the management API run as: an administrator.
            let before = try await user("guest")
            func enrol(_ name: String) async throws -> (status: Int32, output: String, error: String) {
                try await FarmHarness.run(try TestEnvironment.binDirectory + "/buildd-agent", [
                    "enrol", "--master", farm.masterURLs[0], "--join-token", token, "--name", name, "--ca-file", ca,
                    "--config", farm.directory + "/\(name).conf", "--password-file", farm.directory + "/\(name).secret",
                    "--command", "binarypackage=/bin/true",
                ])
            }
            let taken = try await enrol("guest")
            #expect(taken.status == 1 && taken.error.contains("has a user named guest already"), "\(taken)")
            #expect(try await user("guest") == before, "the existing user was changed")
            #expect(!(try await farm.store.builders().map(\.name).contains("guest")))
            #expect(!FileManager.default.fileExists(atPath: farm.directory + "/guest.secret"))
            // The master still reaches its broker as guest, and the token is still good for a proper name.
            let health = try await runBlocking { [trust = farm.trust, url = farm.masterURLs[0]] in
                try SimpleHTTPClient.send(method: "GET", url: url + "/healthz", trust: trust)
            }
            #expect(health.status == 200)
            let rightful = try await enrol("rightful-1")
            #expect(rightful.status == 0, "\(rightful)")
        }
    }
}
