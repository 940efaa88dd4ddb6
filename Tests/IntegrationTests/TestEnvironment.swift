import AMQP
import BuilddMasterKit
import BuilddShared
import Foundation
import Postgres
import Testing

/// Connection settings of the private services `deploy/localfarm test` starts. Integration tests fail
/// (they never skip) when these are missing: run the suite through `deploy/localfarm test`.
enum TestEnvironment {
    struct Missing: Error, CustomStringConvertible {
        let name: String
        var description: String { "\(name) is not set: run the tests with `deploy/localfarm test`" }
    }

    static func value(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else { throw Missing(name: name) }
        return value
    }

    static var adminDatabaseURL: String { get throws { try value("BUILDD_TEST_DATABASE_URL") } }
    static var brokerURL: String { get throws { try value("BUILDD_TEST_BROKER_URL") } }
    static var managementURL: String { get throws { try value("BUILDD_TEST_MANAGEMENT_URL") } }
    static var binDirectory: String { get throws { try value("BUILDD_BIN_DIR") } }
    /// `amqps://` to the same broker, with the private CA's certificate (deploy/localfarm makes both).
    static var amqpsURL: String { get throws { try value("BUILDD_TEST_AMQPS_URL") } }

    static func uniqueName(_ prefix: String) -> String { "\(prefix)_\(randomHexToken(bytes: 5))" }
}

/// A database of its own for one test, dropped afterwards.
struct TestDatabase {
    let name: String
    let url: String

    static func create() async throws -> TestDatabase {
        let admin = try TestEnvironment.adminDatabaseURL
        let name = TestEnvironment.uniqueName("buildd_test")
        try await runBlocking {
            let connection = try PostgresConnection(url: admin)
            defer { connection.close() }
            try connection.execute("CREATE DATABASE \(name)")
        }
        let base = admin[..<admin.lastIndex(of: "/")!]
        return TestDatabase(name: name, url: "\(base)/\(name)")
    }

    func drop() async {
        guard let admin = try? TestEnvironment.adminDatabaseURL else { return }
        let name = self.name
        _ = try? await runBlocking {
            let connection = try PostgresConnection(url: admin)
            defer { connection.close() }
            try connection.execute("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
        }
    }

    /// Every session on this database (from `pg_stat_activity`): its application, state, what it waits for,
    /// which sessions block it and how long its transaction has been open. What a test prints when events stall.
    func sessionReport() async throws -> String {
        let admin = try TestEnvironment.adminDatabaseURL
        let name = self.name
        return try await runBlocking {
            let connection = try PostgresConnection(url: admin)
            defer { connection.close() }
            let rows = try connection.query("""
                SELECT pid, application_name AS app, state, coalesce(wait_event_type || ':' || wait_event, '-') AS waits,
                       pg_blocking_pids(pid)::text AS blocked_by,
                       coalesce(round(extract(epoch FROM now() - xact_start)::numeric, 1)::text, '-') AS xact_seconds,
                       left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
                  FROM pg_stat_activity WHERE datname = $1 ORDER BY xact_start NULLS LAST
                """, [name]).rows
            return "\n" + rows.map { row in
                "pid \(row["pid"] ?? "?") \(row["app"] ?? "?") \(row["state"] ?? "?") waits \(row["waits"] ?? "-") "
                    + "blocked by \(row["blocked_by"] ?? "{}") xact \(row["xact_seconds"] ?? "-") s: \(row["query"] ?? "")"
            }.joined(separator: "\n")
        }
    }

    /// A migrated store on this database.
    func store() async throws -> BuilddStore {
        let store = BuilddStore(url: url, connections: 2)
        try await store.migrate()
        return store
    }
}

/// A RabbitMQ vhost of its own for one test (through the management API), deleted afterwards.
struct TestVhost {
    let name: String
    let brokerURL: String

    static func create() async throws -> TestVhost {
        let management = try TestEnvironment.managementURL
        let base = try TestEnvironment.brokerURL
        let name = TestEnvironment.uniqueName("buildd-test")
        for (path, body) in [("/api/vhosts/\(name)", "{}"),
                             ("/api/permissions/\(name)/guest", #"{"configure":".*","write":".*","read":".*"}"#)] {
            let response = try await runBlocking {
                try SimpleHTTPClient.send(method: "PUT", url: management + path, headers: ["Content-Type": "application/json"],
                                          body: .bytes(Array(body.utf8)))
            }
            guard (200..<300).contains(response.status) else {
                throw SimpleHTTPClient.Failure(description: "management API \(path): HTTP \(response.status)")
            }
        }
        var url = base
        while url.hasSuffix("/") { url.removeLast() }
        return TestVhost(name: name, brokerURL: "\(url)/\(name)")
    }

    func delete() async {
        // The default vhost of a test's private broker is not ours to delete.
        guard name != "/", let management = try? TestEnvironment.managementURL else { return }
        let name = self.name
        _ = try? await runBlocking {
            try SimpleHTTPClient.send(method: "DELETE", url: management + "/api/vhosts/\(name)")
        }
    }

    /// Whether the queue exists, from the management API.
    func queueExists(_ queue: String) async throws -> Bool {
        let management = try TestEnvironment.managementURL
        let name = self.name
        return try await runBlocking {
            try SimpleHTTPClient.send(method: "GET", url: management + "/api/queues/\(name)/\(queue)")
        }.status == 200
    }

    /// A queue's arguments (`x-queue-type`, ...), from the management API.
    func queueArguments(_ queue: String) async throws -> [String: Any] {
        let management = try TestEnvironment.managementURL
        let name = self.name
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: "GET", url: management + "/api/queues/\(name)/\(queue)")
        }
        let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        return object?["arguments"] as? [String: Any] ?? [:]
    }

    /// Which connection (by the name its client gave it, e.g. `buildd-master-first`) is the single active
    /// consumer of each status shard that has one, from the management API.
    func statusShardHolders() async throws -> [String: String] {
        let management = try TestEnvironment.managementURL
        let name = self.name
        func get(_ path: String) async throws -> Any {
            let response = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: management + path) }
            return try JSONSerialization.jsonObject(with: Data(response.body))
        }
        // A connection's own name: what its client set as `connection_name` (the broker's id is the peer).
        var provided: [String: String] = [:]
        func clientName(_ id: String) async throws -> String {
            if let known = provided[id] { return known }
            let connection = try await get("/api/connections/\(ServiceURL.percentEncode(id))") as? [String: Any]
            let properties = connection?["client_properties"] as? [String: Any]
            let named = connection?["user_provided_name"] as? String ?? properties?["connection_name"] as? String ?? id
            provided[id] = named
            return named
        }
        var holders: [String: String] = [:]
        for shard in 0..<BrokerTopology.statusShards {
            let queue = BrokerTopology.statusShardQueue(shard)
            let object = try await get("/api/queues/\(name)/\(queue)") as? [String: Any]
            for consumer in object?["consumer_details"] as? [[String: Any]] ?? []
                where consumer["activity_status"] as? String == "single_active" {
                let channel = consumer["channel_details"] as? [String: Any]
                if let id = channel?["connection_name"] as? String { holders[queue] = try await clientName(id) }
            }
        }
        return holders
    }

    /// Per status shard, from the management API: messages ready and unacknowledged, and each consumer
    /// (its connection's name, whether it is the single active one). What a test prints when events stall.
    func statusShardReport() async throws -> String {
        let management = try TestEnvironment.managementURL
        let name = self.name
        func get(_ path: String) async throws -> [String: Any]? {
            let response = try await runBlocking { try SimpleHTTPClient.send(method: "GET", url: management + path) }
            return try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        }
        var lines: [String] = []
        for shard in 0..<BrokerTopology.statusShards {
            let queue = BrokerTopology.statusShardQueue(shard)
            let object = try await get("/api/queues/\(name)/\(queue)")
            var consumers: [String] = []
            for consumer in object?["consumer_details"] as? [[String: Any]] ?? [] {
                let channel = consumer["channel_details"] as? [String: Any]
                var holder = channel?["connection_name"] as? String ?? "?"
                if let connection = try? await get("/api/connections/\(ServiceURL.percentEncode(holder))") {
                    let properties = connection["client_properties"] as? [String: Any]
                    holder = connection["user_provided_name"] as? String ?? properties?["connection_name"] as? String ?? holder
                }
                consumers.append("\(holder) (\(consumer["activity_status"] as? String ?? "?"))")
            }
            lines.append("\(queue): ready \(object?["messages_ready"] as? Int ?? -1), unacked "
                         + "\(object?["messages_unacknowledged"] as? Int ?? -1), consumers \(consumers)")
        }
        return "\n" + lines.joined(separator: "\n")
    }

    /// How many messages a queue holds, from the management API.
    func messageCount(queue: String) async throws -> Int {
        let management = try TestEnvironment.managementURL
        let name = self.name
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: "GET", url: management + "/api/queues/\(name)/\(queue)")
        }
        let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        return (object?["messages"] as? Int) ?? (object?["messages_ready"] as? Int) ?? 0
    }
}

/// Polls `condition` until it holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(30), interval: Duration = .milliseconds(100),
                _ condition: () async throws -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}

/// The value of the `/metrics` sample of `name` whose labels include `labels` (in any order); nil when there
/// is no such sample, NaN (equal to nothing) when its value does not read as a number.
func metricSample(_ text: String, _ name: String, _ labels: [String: String] = [:]) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
        guard labels.allSatisfy({ line.contains("\($0.key)=\"\($0.value)\"") }) else { continue }
        return Double(line.split(separator: " ").last ?? "") ?? .nan
    }
    return nil
}

/// A wait that ran out: says what the test was waiting for.
struct WaitTimedOut: Error, CustomStringConvertible {
    let description: String
}

/// Runs `body` (which must honour cancellation, as async sequences and `Task.sleep` do), and fails with
/// what it was waiting for when it has not finished within `timeout`.
func within<T: Sendable>(_ timeout: Duration, waitingFor what: String,
                         _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw WaitTimedOut(description: "timed out after \(timeout) waiting for \(what)")
        }
        return value
    }
}

/// Waits for `process` to exit, at most `timeout`; one still running then is killed and the wait fails,
/// saying what was expected of it.
func waitForExit(_ process: Process, timeout: Duration = .seconds(30), _ what: String) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while process.isRunning && clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    guard process.isRunning else { return }
    kill(process.processIdentifier, SIGKILL)
    while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
    throw WaitTimedOut(description: "timed out after \(timeout) waiting for \(what) to exit (killed it)")
}
