import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// Roles, private builds and the audit trail against a real master over HTTPS (a private CA made by the
/// test), PostgreSQL and RabbitMQ, with agents that upload over HTTPS: every route
/// is tried by every kind of caller, each refusal changes nothing, a private build does not exist for
/// those who may not view it, and each change names its actor.
@Suite(.serialized, .timeLimit(.minutes(5))) struct AccessTests {
    struct Answer {
        let status: Int
        let text: String
        let headers: [String: String]
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(text.utf8)) }
    }

    static func send(_ farm: FarmHarness, _ method: String, _ path: String, token: String? = nil, cookie: String? = nil,
                     body: String? = nil) async throws -> Answer {
        let url = farm.masterURLs[0] + path
        var headers: [String: String] = [:]
        if let token { headers["Authorization"] = "Bearer \(token)" }
        if let cookie { headers["Cookie"] = cookie }
        if body != nil { headers["Content-Type"] = method == "POST" && path == "/signin"
            ? "application/x-www-form-urlencoded" : "application/json" }
        let sent = headers, trust = farm.trust
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: method, url: url, headers: sent,
                                      body: body.map { .bytes(Array($0.utf8)) } ?? .none, timeoutSeconds: 10, trust: trust)
        }
        return Answer(status: response.status, text: response.text, headers: response.headers)
    }

    func submit(_ farm: FarmHarness, _ source: String, archive: ArchivePurpose = .primary) async throws -> Int64 {
        try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                 sourceName: source, sourceVersion: "1.0", archive: archive))
    }

    /// What a change could touch, read straight from the database: equal before and after a refusal.
    func snapshot(_ farm: FarmHarness) async throws -> String {
        let builds = try await farm.store.database.query("""
            SELECT string_agg(concat_ws('|', b.id, b.status, q.lastscore, q.manual,
                       (SELECT count(*) FROM build_event e WHERE e.build_id = b.id)), ';' ORDER BY b.id) AS s
              FROM build b LEFT JOIN buildqueue q ON q.build_id = b.id
            """).first?["s"] ?? ""
        let builders = try await farm.store.database.query("""
            SELECT string_agg(concat_ws('|', name, builderok, failnotes, manual, failure_count), ';' ORDER BY name) AS s,
                   (SELECT count(*) FROM builder_event) AS events, (SELECT count(*) FROM api_token) AS tokens
              FROM builder
            """).first
        return builds + "/" + (builders?["s"] ?? "") + "/" + (builders?["events"] ?? "") + "/" + (builders?["tokens"] ?? "")
    }

    @Test func everyRouteAnswersEachCallerAsTheRolesSayAndARefusalChangesNothing() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "acl-builder", processors: ["amd64"])
            let waiting = try await submit(farm, "waiting")
            let ended = try await submit(farm, "ended")
            #expect(try await farm.store.cancel(ended) == .cancelled)
            var tokens: [String: String] = [:]
            for role in Role.allCases { tokens[role.rawValue] = try await farm.store.addToken(name: "t-\(role)", role: role) }
            tokens["expired"] = try await farm.store.addToken(name: "t-expired", role: .admin, expiresInSeconds: 3600)
            try await farm.store.database.query(
                "UPDATE api_token SET expires_at = now() - interval '1 second' WHERE name = 't-expired'")
            tokens["removed"] = try await farm.store.addToken(name: "t-removed", role: .admin)
            try await farm.store.removeToken(name: "t-removed")
            tokens["forged"] = "bdt_" + String(repeating: "0", count: 48)
            try await farm.startMaster(arguments: ["--lookahead", "0"])

            let callers = ["none", "viewer", "submitter", "operator", "admin", "expired", "removed", "forged"]
            func token(_ caller: String) -> String? { caller == "none" ? nil : tokens[caller] }
            /// The roles, as docs/API.md states them (written out here, not read from `Access`, so that a wrong
            /// rule there cannot make its own expectations): the callers each route lets through.
            let mayRead = ["none", "viewer", "submitter", "operator", "admin"]
            let mayReadHistory = ["viewer", "submitter", "operator", "admin"]
            let mayChange = ["operator", "admin"]
            /// What a caller gets from a route that lets `allowed` through: 401 with no token, 403 for a
            /// refused token or a role too low.
            func expected(_ caller: String, _ allowed: [String], status: Int = 200) -> Int {
                if allowed.contains(caller) { return status }
                return caller == "none" ? 401 : 403
            }

            // Reads: open to anyone with no token or a good one; a bad token is refused, not ignored.
            let reads = ["/v1/status", "/v1/processors", "/v1/builders", "/v1/builders/acl-builder", "/v1/builds",
                         "/v1/builds/\(waiting)", "/v1/queue/amd64", "/metrics", "/builders"]
            for path in reads {
                for caller in callers {
                    let answer = try await Self.send(farm, "GET", path, token: token(caller))
                    #expect(answer.status == expected(caller, mayRead), "GET \(path) as \(caller): \(answer.status)")
                }
            }
            for caller in callers {
                let answer = try await Self.send(farm, "GET", "/v1/builders/acl-builder/history", token: token(caller))
                #expect(answer.status == expected(caller, mayReadHistory), "history as \(caller)")
            }

            // Changes: every caller below the route's role is refused first, and the farm is unchanged;
            // then the least role that may, does.
            let changes: [(path: String, body: String)] = [
                ("/v1/builds/\(waiting)/rescore", #"{"score": 9000}"#),
                ("/v1/builders/acl-builder/manual", #"{"manual": true}"#),
                ("/v1/builders/acl-builder/disable", #"{"reason": "disk replaced"}"#),
                ("/v1/builders/acl-builder/enable", "{}"),
                ("/v1/builds/\(ended)/retry", "{}"),
                ("/v1/builds/\(waiting)/cancel", "{}"),
            ]
            for change in changes {
                let before = try await snapshot(farm)
                for caller in callers where !mayChange.contains(caller) {
                    let answer = try await Self.send(farm, "POST", change.path, token: token(caller), body: change.body)
                    #expect(answer.status == expected(caller, mayChange),
                            "POST \(change.path) as \(caller): \(answer.status) \(answer.text)")
                    #expect(try await snapshot(farm) == before, "POST \(change.path) as \(caller) changed the farm")
                }
                let done = try await Self.send(farm, "POST", change.path, token: tokens["operator"], body: change.body)
                #expect(done.status == 200, "POST \(change.path) as operator: \(done.status) \(done.text)")
                #expect(try await snapshot(farm) != before, "POST \(change.path) as operator changed nothing")
            }
            // The admin may do what the operator may.
            #expect(try await Self.send(farm, "POST", "/v1/builders/acl-builder/manual", token: tokens["admin"],
                                        body: #"{"manual": false}"#).status == 200)

            // Each change names its actor: the token's name in the build's and the builder's history.
            let history = try await farm.store.build(waiting).history
            #expect(history.contains { $0.actor == "t-operator" && $0.message == "rescored to 9000" })
            #expect(history.contains { $0.actor == "t-operator" && $0.status == BuildStatus.cancelled.rawValue })
            #expect(try await farm.store.build(ended).history
                .contains { $0.actor == "t-operator" && $0.status == BuildStatus.needsBuild.rawValue })
            let builderHistory = try #require(try await Self.send(farm, "GET", "/v1/builders/acl-builder/history",
                                                                  token: tokens["viewer"]).json as? [[String: Any]])
            let lines = builderHistory.map { "\($0["kind"] as? String ?? "?") \($0["actor"] as? String ?? "-") \($0["reason"] as? String ?? "")" }
            #expect(lines == ["automatic t-admin ", "enabled t-operator ", "disabled t-operator disk replaced",
                              "manual t-operator "], "newest first: \(lines)")

            // The CLI on a database host records cli:USER.
            #expect(try await farm.cli("builder", "disable", "acl-builder", "--reason", "from the shell").status == 0)
            let shown = try await farm.cli("builder", "history", "acl-builder", "--json")
            let cliLines = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [[String: Any]])
            #expect((cliLines.first?["actor"] as? String)?.hasPrefix("cli:") == true, "\(shown.output)")
            #expect(cliLines.first?["reason"] as? String == "from the shell")

            // Tokens: listed with role and expiry, never with the secret.
            let listed = try await farm.cli("token", "list", "--json")
            #expect(listed.status == 0)
            #expect(!tokens.values.contains { listed.output.contains($0) }, "a token's secret is listed")
            let rows = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [[String: Any]])
            #expect(rows.first { $0["name"] as? String == "t-expired" }?["expired"] as? Bool == true)
            #expect(rows.first { $0["name"] as? String == "t-viewer" }?["role"] as? String == "viewer")
            #expect(try await farm.cli("token", "add", "nope", "--role", "root").status != 0)
        }
    }

    @Test func aPrivateBuildDoesNotExistForThoseWhoMayNotViewIt() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "priv-agent", processors: ["amd64"])
            let viewer = try await farm.store.addToken(name: "reader", role: .viewer)
            try await farm.startMaster(arguments: ["--lookahead", "0"])
            // A public and a private build, built for real by an agent, with their files and logs; then a
            // private one that keeps building (a "slow" sample build) while the builders are read.
            let open = try await submit(farm, "openpkg")
            let secret = try await submit(farm, "secretpkg", archive: .private)
            let running = try await submit(farm, "secretslow", archive: .private)
            for id in [open, secret] { try await farm.store.rescore(id, score: 20000) }

            // Waiting, with no builder: the queue shows the private builds to viewers only.
            let queued = try await Self.send(farm, "GET", "/v1/queue/amd64")
            #expect(queued.status == 200 && queued.text.contains("openpkg"))
            #expect(!queued.text.contains("secret") && !queued.text.contains("\"id\":\(running)"), "\(queued.text)")
            let viewerQueue = try await Self.send(farm, "GET", "/v1/queue/amd64", token: viewer)
            #expect(viewerQueue.text.contains("secretpkg") && viewerQueue.text.contains("secretslow"))

            try farm.startAgent("priv-agent", processors: ["amd64"], sampleSeconds: 0.2,
                                environment: ["BUILDD_SAMPLE_SLOW_SECONDS": "120"])
            #expect(try await eventually(timeout: .seconds(60)) {
                let statuses = try await [open, secret].asyncMap { try await farm.store.build($0).build.status }
                return statuses.allSatisfy { $0 == .fullyBuilt }
            }, "both builds end")
            let detail = try await farm.store.build(secret)
            let file = try #require(detail.files.first { $0.kind == "result" })
            let log = try #require(detail.logName)

            // Anonymous: a 404 from every route that names it, as for a build that does not exist.
            for path in ["/v1/builds/\(secret)", "/v1/builds/\(secret)/files/\(file.name)", "/v1/builds/\(secret)/files/\(log)"] {
                let answer = try await Self.send(farm, "GET", path)
                #expect(answer.status == 404, "GET \(path): \(answer.status)")
                #expect(!answer.text.contains("secretpkg"))
            }
            let missing = try await Self.send(farm, "GET", "/v1/builds/999999")
            #expect(missing.status == 404)
            // Absent from lists, the builder's recent builds and the metrics.
            for path in ["/v1/builds", "/v1/builds?status=FULLYBUILT", "/v1/builders/priv-agent", "/v1/builders", "/metrics"] {
                let answer = try await Self.send(farm, "GET", path)
                #expect(answer.status == 200)
                #expect(!answer.text.contains("secretpkg"), "GET \(path) shows the private build")
                if path.hasPrefix("/v1/builds") { #expect(answer.text.contains("openpkg"), "GET \(path) lost the public build") }
            }
            // The public build's files are served to anyone.
            let openFile = try #require(try await farm.store.build(open).files.first { $0.kind == "result" })
            #expect(try await Self.send(farm, "GET", "/v1/builds/\(open)/files/\(openFile.name)").status == 200)

            // A viewer sees it all.
            #expect(try await Self.send(farm, "GET", "/v1/builds/\(secret)", token: viewer).text.contains("secretpkg"))
            #expect(try await Self.send(farm, "GET", "/v1/builds/\(secret)/files/\(file.name)", token: viewer).status == 200)
            #expect(try await Self.send(farm, "GET", "/v1/builds/\(secret)/files/\(log)", token: viewer).status == 200)
            #expect(try await Self.send(farm, "GET", "/v1/builds", token: viewer).text.contains("secretpkg"))

            // On its builder while it runs: "private build", with no id, name, version or log.
            #expect(try await eventually(timeout: .seconds(30)) {
                try await farm.store.build(running).build.status == .building
            })
            let builders = try #require(try await Self.send(farm, "GET", "/v1/builders").json as? [[String: Any]])
            let row = try #require(builders.first { $0["name"] as? String == "priv-agent" })
            #expect(row["current_title"] as? String == "private build")
            #expect((row["current_build"] == nil || row["current_build"] is NSNull)
                    && (row["log_tail"] == nil || row["log_tail"] is NSNull), "\(row)")
            #expect(row["state"] as? String == "building")
            let seen = try #require(try await Self.send(farm, "GET", "/v1/builders", token: viewer).json as? [[String: Any]])
            #expect(seen.first { $0["name"] as? String == "priv-agent" }?["current_build"] as? Int == Int(running))
        }
    }

    @Test func withAnonymousReadOffEveryReadNeedsATokenAndPagesSignIn() async throws {
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            let build = try await submit(farm, "closed")
            let viewer = try await farm.store.addToken(name: "reader", role: .viewer)
            try await farm.startMaster(arguments: ["--anonymous-read", "off"])
            for path in ["/v1/status", "/v1/builds", "/v1/builds/\(build)", "/v1/queue/amd64", "/metrics"] {
                #expect(try await Self.send(farm, "GET", path).status == 401, "GET \(path) with no token")
                #expect(try await Self.send(farm, "GET", path, token: viewer).status == 200, "GET \(path) as viewer")
            }
            // Health stays open for load balancers: it says only ok or what is down.
            #expect(try await Self.send(farm, "GET", "/healthz").status == 200)
            let page = try await Self.send(farm, "GET", "/builders")
            #expect(page.status == 303 && page.headers["location"] == "/signin?next=/builders", "\(page.status) \(page.headers)")
            for path in ["/builds", "/builds/\(build)", "/plots", "/queue/amd64"] {
                let closed = try await Self.send(farm, "GET", path)
                #expect(closed.status == 303 && closed.headers["location"] == "/signin?next=\(path)", "GET \(path): \(closed.status)")
            }
            #expect(try await Self.send(farm, "POST", "/signin", body: "token=bdt_wrong").status == 403)
            let signedIn = try await Self.send(farm, "POST", "/signin",
                                               body: "token=" + viewer.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)
            #expect(signedIn.status == 303)
            let cookie = try #require(signedIn.headers["set-cookie"]?.split(separator: ";").first.map(String.init))
            #expect(signedIn.headers["set-cookie"]?.contains("HttpOnly") == true)
            #expect(try await Self.send(farm, "GET", "/builders", cookie: cookie).status == 200)
            for path in ["/builds", "/builds/\(build)", "/plots"] {
                let open = try await Self.send(farm, "GET", path, cookie: cookie)
                #expect(open.status == 200 && open.text.contains("reader (viewer)"), "GET \(path) signed in: \(open.status)")
            }
            let stale = try await Self.send(farm, "GET", "/builders", cookie: "buildd_token=bdt_removed")
            #expect(stale.status == 303 && stale.headers["location"] == "/signin?next=/builders", "a stale cookie signs in again")
            #expect(try await Self.send(farm, "GET", "/v1/builds/\(build)", cookie: cookie).status == 200)
            // The cookie is for reading: a change needs the header, so another site cannot make a browser do it.
            let operatorToken = try await farm.store.addToken(name: "ops", role: .operator)
            let viaCookie = try await Self.send(farm, "POST", "/v1/builds/\(build)/cancel",
                                                cookie: "buildd_token=\(operatorToken)", body: "{}")
            #expect(viaCookie.status == 401)
            #expect(try await farm.store.build(build).build.status == .needsBuild)
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var values: [T] = []
        for element in self { values.append(try await transform(element)) }
        return values
    }
}
