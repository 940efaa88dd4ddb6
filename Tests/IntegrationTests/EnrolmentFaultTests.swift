import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// An enrolment makes its broker user inside the transaction that adds the builder. These tests put a slow
/// management API and a lost database under that transaction. Found by CI: under load, the management API's
/// four calls outlasted the session's idle-in-transaction limit (a third of the lease), the server ended the
/// session, COMMIT failed, the machine got a bare 500 and the broker kept a user of a builder that was never
/// added, so the same name could not enrol again.
@Suite(.serialized, .timeLimit(.minutes(4))) struct EnrolmentFaultTests {
    /// A master whose broker management API answers through a relay that holds every request `delay`
    /// seconds, and whose database is reached through a relay a test can cut (with `databaseRelay` options).
    static func withSlowManagement(delay: Double, users: [String], databaseRelay: [String] = [],
                                   _ body: (FarmHarness, String, TCPRelay) async throws -> Void) async throws {
        // Users are the broker's, not the vhost's: a run killed before its clean-up leaves them for the next.
        await OperationsTests.deleteUsers(users)
        let farm = try await FarmHarness.make(tls: true)
        defer { Task { await OperationsTests.deleteUsers(users) } }
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            let management = try TestEnvironment.managementURL
            let (_, slow) = try await farm.startRelay(to: management, defaultPort: 15672, options: ["--delay", "\(delay)"])
            let (database, relayed) = try await farm.startDatabaseRelay(options: databaseRelay)
            // Lease 10 s: each session ends a transaction left idle for 3.3 s, and the broker's calls take longer.
            try await farm.startMaster(lease: 10, databaseURL: relayed, arguments: ["--broker-management-url", slow])
            try await body(farm, management, database)
        }
    }

    static func enrol(_ farm: FarmHarness, _ name: String, token: String) async throws
        -> (status: Int32, output: String, error: String) {
        try await FarmHarness.run(try TestEnvironment.binDirectory + "/buildd-agent", [
            "enrol", "--master", farm.masterURLs[0], "--join-token", token, "--name", name,
            "--ca-file", try #require(farm.tls?.ca),
            "--config", farm.directory + "/\(name).conf", "--password-file", farm.directory + "/\(name).secret",
            "--command", "binarypackage=/bin/true",
        ])
    }

    static func brokerUserStatus(_ management: String, _ name: String) async throws -> Int {
        try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: management + "/api/users/\(name)").status }
    }

    static func joinToken(_ farm: FarmHarness, _ name: String) async throws -> String {
        let made = try await farm.cli("token", "add", name, "--role", "enrol", "--expires", "1h", "--processor", "amd64")
        #expect(made.status == 0, "\(made)")
        return made.output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func aSlowBrokerManagementAPIStillEnrols() async throws {
        try await Self.withSlowManagement(delay: 1.5, users: ["slow-1"]) { farm, management, _ in
            let token = try await Self.joinToken(farm, "rack-slow")
            let started = ContinuousClock.now
            let enrolled = try await Self.enrol(farm, "slow-1", token: token)
            let took = ContinuousClock.now - started
            #expect(enrolled.status == 0, "\(enrolled)")
            // Four calls of 1.5 s each: past the 3.3 s a session may otherwise sit idle in a transaction.
            #expect(took > .seconds(5), "the management API was not slow: \(took)")
            #expect(try await farm.store.builders().map(\.name).contains("slow-1"))
            #expect(try await Self.brokerUserStatus(management, "slow-1") == 200)
            let secret = try String(contentsOfFile: farm.directory + "/slow-1.secret", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            // The password given out is the broker user's.
            let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "slow-1:\(secret)@")
            let configuration = try AMQPConfiguration(url: url, connectionName: "slow-1")
            try await runBlocking { try AMQPConnection(configuration: configuration).close() }
        }
    }

    @Test func aDatabaseLostWhileTheBrokerUserIsMadeLeavesNothingAndTheTokenGood() async throws {
        try await Self.withSlowManagement(delay: 2, users: ["cut-1"]) { farm, management, database in
            let token = try await Self.joinToken(farm, "rack-cut")
            let attempt = Task { try await Self.enrol(farm, "cut-1", token: token) }
            #expect(try await Self.brokerUserStatus(management, "cut-1") == 404, "no user cut-1 before the enrolment")
            // The user exists once its PUT is through: the transaction is open, with two calls still to make.
            let userMade = try await eventually(timeout: .seconds(30), interval: .milliseconds(50)) {
                try await Self.brokerUserStatus(management, "cut-1") == 200
            }
            #expect(userMade)
            database.cut()
            let failed = try await attempt.value
            database.heal()
            // A 503 that says what happened to the machine, and no more: the database's own error is for the log.
            // The agent tried every master it knows (one here) and exits 69, unavailable: worth trying again.
            #expect(failed.status == 69 && failed.error.hasSuffix("""
                : 503 this master's database failed (its log says how); nothing was enrolled and the join \
                token is still good: try again, or another master\n
                """), "\(failed)")
            #expect(farm.log("master").contains("enrolment failed: nothing enrolled"))
            #expect(!FileManager.default.fileExists(atPath: farm.directory + "/cut-1.secret"))
            // Nothing is left: no broker user, no builder, and the token unspent.
            #expect(try await Self.brokerUserStatus(management, "cut-1") == 404,
                    "the broker user outlived the enrolment: \(farm.log("master").suffix(4000))")
            #expect(!(try await farm.store.builders().map(\.name).contains("cut-1")))
            let listed = try await farm.cli("token", "list", "--json")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            #expect(rows.first { $0["name"] as? String == "rack-cut" }?["state"] as? String == "valid", "\(listed.output)")
            // The same machine tries again, under the same name, once the cut session is gone on the server.
            var again = (status: Int32(-1), output: "", error: "")
            let enrolled = try await eventually(timeout: .seconds(90), interval: .seconds(1)) {
                again = try await Self.enrol(farm, "cut-1", token: token)
                return again.status == 0
            }
            #expect(enrolled, "\(again)")
            #expect(try await farm.store.builders().map(\.name).contains("cut-1"))
            #expect(try await Self.brokerUserStatus(management, "cut-1") == 200)
        }
    }

    /// The enrolment's COMMIT reaches the database and its answer is lost: the machine is enrolled all the
    /// same, and the master, which made the broker user, must not take it back.
    @Test func anEnrolmentWhoseCommitAnswerIsLostIsStillAnEnrolment() async throws {
        try await Self.withSlowManagement(delay: 0.5, users: ["lost-1"],
                                          databaseRelay: ["--cut-after-commit-of", "join_token", "1"]) { farm, management, database in
            let token = try await Self.joinToken(farm, "rack-lost")
            let enrolled = try await Self.enrol(farm, "lost-1", token: token)
            #expect(enrolled.status == 0, "\(enrolled)")
            #expect(database.output.contains("cut after a watched COMMIT"), "no cut: \(database.output)")
            #expect(try await farm.store.builders().map(\.name).contains("lost-1"))
            #expect(try await Self.brokerUserStatus(management, "lost-1") == 200, "the enrolled machine's broker user was taken back")
            let secret = try String(contentsOfFile: farm.directory + "/lost-1.secret", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let url = farm.vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "lost-1:\(secret)@")
            let configuration = try AMQPConfiguration(url: url, connectionName: "lost-1")
            try await runBlocking { try AMQPConnection(configuration: configuration).close() }
        }
    }
}
