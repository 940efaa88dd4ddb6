import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Join tokens over the API (`/v1/join-tokens`), as an autoscaler would make them: only an admin token may
/// make, list or take one back; the token it answers enrols a machine over HTTPS exactly once, under the
/// admin token's name; a token taken back enrols nothing. Each refusal is tried and changes nothing.
@Suite(.serialized, .timeLimit(.minutes(3))) struct JoinTokenAPITests {
    @Test func anAdminTokenMakesJoinTokensThatEnrolOnceAndNothingElseMay() async throws {
        try await EnrolmentTests.withEnrollingMaster(processors: ["amd64", "arm64"],
                                                     users: ["scaled-1", "scaled-2", "scaled-3"]) { farm, _ in
            let ca = try #require(farm.tls?.ca)
            let master = farm.masterURLs[0]
            let admin = try await farm.store.addToken(name: "autoscaler", role: .admin)
            let operatorToken = try await farm.store.addToken(name: "ops", role: .operator)
            func send(_ method: String, _ path: String, token: String?, _ body: String? = nil) async throws
                -> AccessTests.Answer {
                try await AccessTests.send(farm, method, path, token: token, body: body)
            }
            func joinTokenNames() async throws -> [String] { try await farm.store.joinTokens().map(\.name) }
            let request = #"{"name": "scale-1", "processors": ["amd64"], "expires_in": 600}"#

            // Nobody but an admin: no token, an operator's, a join token's own kind.
            #expect(try await send("POST", "/v1/join-tokens", token: nil, request).status == 401)
            let byOperator = try await send("POST", "/v1/join-tokens", token: operatorToken, request)
            #expect(byOperator.status == 403 && byOperator.text.contains("needs admin"), "\(byOperator)")
            #expect(try await send("GET", "/v1/join-tokens", token: operatorToken).status == 403)
            // Even an admin's malformed body is a clear 400, and one past the API's 64 KiB a 413.
            let malformed = try await send("POST", "/v1/join-tokens", token: admin, #"{"name": "scale-1", "processors": "amd64"}"#)
            #expect(malformed.status == 400 && malformed.text.contains("the body must be JSON like"), "\(malformed)")
            let padding = String(repeating: "x", count: 70_000)
            let oversized = try await send("POST", "/v1/join-tokens", token: admin,
                                           #"{"name": "scale-1", "processors": ["amd64"], "expires_in": 600, "pad": "\#(padding)"}"#)
            #expect(oversized.status == 413, "\(oversized.status) \(oversized.text.prefix(200))")
            #expect(try await joinTokenNames().isEmpty, "a refused request made a join token")

            // The admin makes one; the answer holds the secret, the list never does.
            let made = try await send("POST", "/v1/join-tokens", token: admin, request)
            #expect(made.status == 201, "\(made)")
            let grant = try #require(made.json as? [String: Any])
            let token = try #require(grant["token"] as? String)
            #expect(token.hasPrefix("bdj_") && token.count == 52, "\(token)")
            #expect(grant["processors"] as? [String] == ["amd64"] && grant["expires_at"] is String, "\(grant)")
            let joinAsAPI = try await send("GET", "/v1/join-tokens", token: token)
            #expect(joinAsAPI.status == 403, "a join token is no API token: \(joinAsAPI)")
            let again = try await send("POST", "/v1/join-tokens", token: admin, request)
            #expect(again.status == 409, "\(again)")
            let tooLong = try await send("POST", "/v1/join-tokens", token: admin,
                                         #"{"name": "scale-9", "processors": ["amd64"], "expires_in": 691200}"#)
            #expect(tooLong.status == 400 && tooLong.text.contains("at most 7 days"), "\(tooLong)")
            #expect(try await joinTokenNames() == ["scale-1"])

            // A machine enrols with it, once, and the builder's history names it.
            func enrol(_ name: String, _ token: String) async throws -> (status: Int32, output: String, error: String) {
                try await FarmHarness.run(try TestEnvironment.binDirectory + "/buildd-agent", [
                    "enrol", "--master", master, "--join-token", token, "--name", name, "--ca-file", ca,
                    "--config", farm.directory + "/\(name).conf", "--password-file", farm.directory + "/\(name).secret",
                    "--command", "binarypackage=/bin/true",
                ])
            }
            let first = try await enrol("scaled-1", token)
            #expect(first.status == 0, "\(first)")
            let history = try await farm.store.builderHistory("scaled-1")
            #expect(history.contains { $0.kind == "added" && $0.actor == "join-token:scale-1" }, "\(history)")
            let second = try await enrol("scaled-2", token)
            #expect(second.status == 77, "\(second)")
            let listed = try await send("GET", "/v1/join-tokens", token: admin)
            #expect(listed.status == 200 && !listed.text.contains(token), "\(listed)")
            let rows = try #require(listed.json as? [[String: Any]])
            let row = try #require(rows.first { $0["name"] as? String == "scale-1" })
            #expect(row["state"] as? String == "used" && row["used_by"] as? String == "scaled-1"
                        && row["created_by"] as? String == "autoscaler", "\(row)")

            // One taken back enrols nothing; an operator cannot take one back.
            let spare = try await send("POST", "/v1/join-tokens", token: admin,
                                       #"{"name": "scale-2", "processors": ["arm64"], "expires_in": 600}"#)
            let spareToken = try #require((spare.json as? [String: Any])?["token"] as? String, "\(spare)")
            #expect(try await send("DELETE", "/v1/join-tokens/scale-2", token: operatorToken).status == 403)
            #expect(try await joinTokenNames() == ["scale-1", "scale-2"])
            #expect(try await send("DELETE", "/v1/join-tokens/scale-2", token: admin).status == 204)
            #expect(try await send("DELETE", "/v1/join-tokens/scale-2", token: admin).status == 404)
            let revoked = try await enrol("scaled-3", spareToken)
            #expect(revoked.status == 77 && revoked.error.contains("join token refused"), "\(revoked)")
            let builders = try await farm.store.builders().map(\.name)
            #expect(builders.contains("scaled-1") && !builders.contains("scaled-2") && !builders.contains("scaled-3"),
                    "\(builders)")
        }
    }
}
