import BuilddMasterKit
import BuilddShared
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Real `buildd-master` and `buildd-agent` processes on a test database and vhost.
final class FarmHarness: @unchecked Sendable, TestResource {
    let database: TestDatabase
    let vhost: TestVhost
    let store: BuilddStore
    let directory: String
    /// Masters by name, in start order, with their HTTP ports.
    private(set) var masters: [(name: String, port: Int, process: Process)] = []
    private(set) var agents: [String: Process] = [:]
    private(set) var standIns: [LegacyStandIn] = []
    private(set) var relays: [TCPRelay] = []
    /// Helper scripts started with ``startSupportScript(_:_:log:)``: killed when the farm closes (they inherit
    /// the test process's ignored SIGTERM, so `terminate()` alone leaves them running).
    private(set) var helpers: [Process] = []
    /// With HTTPS: the private CA this farm made and the masters' certificate and key (for 127.0.0.1 and
    /// localhost); nil: plain http, which agents take only with `insecure_http = true`.
    let tls: (ca: String, certificate: String, key: String)?
    /// What clients of this farm's masters trust: its private CA, or the system's store.
    let trust: TLSTrust

    init(database: TestDatabase, vhost: TestVhost, store: BuilddStore, tls: Bool = false) throws {
        self.database = database
        self.vhost = vhost
        self.store = store
        directory = NSTemporaryDirectory() + "buildd-farm-\(randomHexToken(bytes: 5))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if tls {
            let made = try Self.makeCertificates(in: directory + "/tls", names: ["IP:127.0.0.1", "DNS:localhost"])
            self.tls = made
            trust = try TLSTrust(caFile: made.ca)
        } else {
            self.tls = nil
            trust = .system
        }
    }

    /// A private CA and a server certificate signed by it for `names` (subjectAltName entries), made with
    /// the openssl command; `commonName` only names the CA.
    static func makeCertificates(in folder: String, names: [String], commonName: String = "buildd test CA")
        throws -> (ca: String, certificate: String, key: String) {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let script = """
            set -e
            cd '\(folder)'
            openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=\(commonName)' -keyout ca.key -out ca.pem
            openssl req -newkey rsa:2048 -nodes -subj '/CN=buildd test server' -keyout server.key -out server.csr
            printf 'subjectAltName = \(names.joined(separator: ","))\\n' > server.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SimpleHTTPClient.Failure(description: "openssl could not make certificates in \(folder)")
        }
        return (folder + "/ca.pem", folder + "/server.pem", folder + "/server.key")
    }

    /// Runs `body` with a new farm and always stops its processes and drops its database afterwards.
    static func with<T>(_ body: (FarmHarness) async throws -> T) async throws -> T {
        let farm = try await make()
        do {
            let value = try await body(farm)
            await farm.close()
            return value
        } catch {
            await farm.close()
            throw error
        }
    }

    /// A farm on a test database and vhost; with `tls`, its masters serve HTTPS with a private CA made here.
    static func make(tls: Bool = false) async throws -> FarmHarness {
        let database = try await TestDatabase.create()
        let vhost = try await TestVhost.create()
        return try FarmHarness(database: database, vhost: vhost, store: try await database.store(), tls: tls)
    }

    /// Every started master's URL; agents may upload to any (they share the artifact store).
    var masterURLs: [String] { masters.map { "\(tls == nil ? "http" : "https")://127.0.0.1:\($0.port)" } }
    var artifactRoot: String { directory + "/artifacts" }

    /// A port a test's own server (a private broker, an archive, a master) may listen on: free when asked,
    /// and below the kernel's ephemeral range, so that no outgoing connection of this busy machine can take it
    /// before the server binds it (a port the kernel chose for bind(0) and we closed again can be handed to the
    /// next connect(): a private broker then failed with eaddrinuse). Handed out in turn within this process.
    static func freePort() throws -> Int {
        let ephemeralLow = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))
            .flatMap { $0.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } } ?? 32768
        let low = max(1024, ephemeralLow - 12_000), span = ephemeralLow - low
        for _ in 0..<span {
            let port = low + portCursor.withLock { cursor -> Int in
                cursor = (cursor + 1) % span
                return cursor
            }
            if canListen(port) { return port }
        }
        throw SimpleHTTPClient.Failure(description: "no free port below \(ephemeralLow)")
    }

    /// Where ``freePort()`` goes on from: a random start, so that two test processes seldom ask for the same.
    private static let portCursor = Mutex<Int>(Int.random(in: 0..<10_000))

    private static func canListen(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { Glibc.close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    func spawn(_ executable: String, _ arguments: [String], log: String, environment: [String: String] = [:]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestEnvironment.binDirectory + "/" + executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(["BUILDD_CONFIG": "/dev/null"]) { $1 }
            .merging(environment) { $1 }
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    func startMaster(name: String = "master", lease: Int = 10, acceptTimeout: Int = 10, port: Int? = nil,
                     databaseURL: String? = nil, arguments: [String] = []) async throws {
        let port = try port ?? Self.freePort()
        let process = try spawn("buildd-master", [
            "serve", "--database", databaseURL ?? database.url, "--broker", vhost.brokerURL, "--http-port", "\(port)",
            "--artifacts", artifactRoot, "--lease", "\(lease)", "--accept-timeout", "\(acceptTimeout)",
            "--name", name,
        ] + (tls.map { ["--tls-certificate", $0.certificate, "--tls-key", $0.key] } ?? []) + arguments,
            log: directory + "/\(name).log")
        masters.append((name, port, process))
        let url = "\(tls == nil ? "http" : "https")://127.0.0.1:\(port)/healthz"
        let trust = self.trust
        // Healthy, and listening itself: a port taken by another test's process between `freePort()` and the
        // bind would otherwise answer for it.
        let up = try await eventually(timeout: .seconds(30)) {
            if !process.isRunning { return true }
            guard self.log(name).contains("msg=\"http listening\"") else { return false }
            return (try? await runBlocking { try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 2, trust: trust) })?
                .status == 200
        } && process.isRunning
        if !up { throw SimpleHTTPClient.Failure(description: "master did not become healthy: \(log(name))") }
    }

    /// Starts one more master on this farm's database with `certificate` instead of the farm's, and returns
    /// its port once it listens (its health is not asked: nothing here trusts it). It is the last of
    /// ``masterURLs``; start agents before it.
    func startOtherMaster(certificate: (ca: String, certificate: String, key: String)) async throws -> Int {
        let port = try Self.freePort()
        let name = "other-\(port)"
        let process = try spawn("buildd-master", [
            "serve", "--database", database.url, "--broker", vhost.brokerURL, "--http-port", "\(port)",
            "--artifacts", artifactRoot, "--name", name,
            "--tls-certificate", certificate.certificate, "--tls-key", certificate.key,
        ], log: directory + "/\(name).log")
        masters.append((name, port, process))
        let up = try await eventually(timeout: .seconds(30)) { self.log(name).contains("msg=\"http listening\"") }
        if !up { throw SimpleHTTPClient.Failure(description: "master \(name) did not listen: \(log(name))") }
        return port
    }

    /// Runs a program to its end and returns its exit status, standard output and standard error.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String, error: String) {
        let directory = NSTemporaryDirectory() + "run-\(randomHexToken(bytes: 6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        FileManager.default.createFile(atPath: directory + "/out", contents: nil)
        FileManager.default.createFile(atPath: directory + "/err", contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/out"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/err"))
        try process.run()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while process.isRunning && clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        while process.isRunning { try await Task.sleep(for: .milliseconds(20)) }
        return (process.terminationStatus, try String(contentsOfFile: directory + "/out", encoding: .utf8),
                try String(contentsOfFile: directory + "/err", encoding: .utf8))
    }

    /// Runs `buildd-master` with this farm's database and broker.
    /// The `/metrics` text of this farm's first master.
    func metricsText() async throws -> String {
        let url = masterURLs[0] + "/metrics"
        let trust = self.trust
        return try await runBlocking {
            try SimpleHTTPClient.send(method: "GET", url: url, timeoutSeconds: 10, trust: trust).text
        }
    }

    /// No configuration file is read (`BUILDD_CONFIG=/dev/null`) unless `environment` names one, so a
    /// `/etc/buildd/master.env` on the test machine cannot change what a test sees.
    func cli(_ arguments: String..., environment: [String: String] = [:]) async throws
        -> (status: Int32, output: String, error: String) {
        try await cli(arguments, environment: environment)
    }

    func cli(_ arguments: [String], environment: [String: String] = [:]) async throws
        -> (status: Int32, output: String, error: String) {
        try await Self.run(try TestEnvironment.binDirectory + "/buildd-master", arguments, environment: [
            "BUILDD_DATABASE_URL": database.url, "BUILDD_BROKER_URL": vhost.brokerURL, "BUILDD_CONFIG": "/dev/null",
        ].merging(environment) { $1 })
    }

    /// A file of the checkout, e.g. `deploy/rabbitmq/enrol-agent`.
    static func repositoryFile(_ path: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(path).path
    }

    /// Runs a Python script of Tests/Support with `arguments`, its output in `log`.
    func startSupportScript(_ name: String, _ arguments: [String], log: String) throws -> Process {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Support/" + name).path
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script] + arguments
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        helpers.append(process)
        return process
    }

    /// Starts a launchpad-buildd stand-in (Tests/Support/buildd-standin.py) on a free loopback port.
    func startStandIn(arch: String = "amd64") async throws -> LegacyStandIn {
        let port = try Self.freePort()
        let log = directory + "/standin-\(port).log"
        let process = try startSupportScript("buildd-standin.py", ["--port", "\(port)", "--arch", arch], log: log)
        let standIn = LegacyStandIn(port: port, process: process)
        standIns.append(standIn)
        let up = try await eventually(timeout: .seconds(15)) { (try? await standIn.control("probe")) != nil }
        if !up { throw SimpleHTTPClient.Failure(description: "stand-in did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
        return standIn
    }

    /// Starts a relay (Tests/Support/tcp-relay.py) in front of this farm's PostgreSQL; returns it and the
    /// database URL through it. `options` are the relay's (e.g. `--cut-after-commit-of`).
    func startDatabaseRelay(options: [String] = []) async throws -> (relay: TCPRelay, url: String) {
        try await startRelay(to: database.url, defaultPort: 5432, options: options)
    }

    /// Starts a relay (Tests/Support/tcp-relay.py) with `options` (e.g. `--delay 2`: a slow server) in front of
    /// the service at `url`; returns it and the URL through it.
    func startRelay(to url: String, defaultPort: Int, options: [String] = []) async throws -> (relay: TCPRelay, url: String) {
        var target = try #require(URLComponents(string: url), "URL \(url)")
        let host = target.host ?? "127.0.0.1"
        let port = target.port ?? defaultPort
        let listen = try Self.freePort()
        let log = directory + "/relay-\(listen).log"
        let process = try startSupportScript("tcp-relay.py", options + ["\(listen)", host, "\(port)"], log: log)
        let relay = TCPRelay(process: process, log: log)
        relays.append(relay)
        let up = try await eventually(timeout: .seconds(15)) {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening")
        }
        if !up { throw SimpleHTTPClient.Failure(description: "relay did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
        target.port = listen
        target.host = "127.0.0.1"
        return (relay, try #require(target.string))
    }

    func startAgent(_ name: String, processors: [String], sampleSeconds: Double = 0.3, agentSettings: String = "",
                    commands: String = "", queueType: String = "classic", masters: [String]? = nil,
                    environment: [String: String] = [:], caFile: String? = nil,
                    brokerUser: (name: String, password: String)? = nil) throws {
        let secret = directory + "/\(name).secret"
        try "\(brokerUser?.password ?? "guest")\n".write(toFile: secret, atomically: true, encoding: .utf8)
        chmod(secret, 0o600)  // as docs/deploy.md says: the agent's alone
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let brokerURL = vhost.brokerURL.replacingOccurrences(of: "guest:guest@", with: "\(brokerUser?.name ?? "guest")@")
        let config = """
            [agent]
            name = \(name)
            processors = \(processors.joined(separator: ","))
            workdir = \(directory)/work-\(name)
            heartbeat = 1
            \(agentSettings.contains("build_user") || geteuid() != 0 ? "" : "build_user = nobody")
            \(agentSettings)
            [broker]
            url = \(brokerURL)
            password_file = \(secret)
            queue_type = \(queueType)
            [master]
            url = \((masters ?? masterURLs).joined(separator: ", "))
            \((caFile ?? tls?.ca).map { "ca_file = \($0)" } ?? "insecure_http = true")
            [commands]
            binarypackage = \(repository)/deploy/examples/sample-build
            \(commands)
            """
        let path = directory + "/\(name).conf"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        let log = directory + "/\(name).log"
        if agents[name] != nil, FileManager.default.fileExists(atPath: log) {
            // A restart: keep the earlier run's log.
            try? FileManager.default.moveItem(atPath: log, toPath: log + ".\(randomHexToken(bytes: 3))")
        }
        agents[name] = try spawn("buildd-agent", ["run", "-c", path], log: log,
                                 environment: ["BUILDD_SAMPLE_SECONDS": "\(sampleSeconds)", "BUILDD_TEST_FARM": directory]
                                    .merging(environment) { $1 })
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    /// Sends SIGTERM and waits; returns the exit status (or nil when it had to be killed).
    static func stop(_ process: Process, timeout: Duration = .seconds(15)) async -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while process.isRunning && clock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    /// Stops every process; returns the exit status of each by name.
    func stopAll() async -> [String: Int32?] {
        var statuses: [String: Int32?] = [:]
        // The stand-in keeps nothing: kill it (a Python child may inherit a signal mask that blocks SIGTERM).
        for process in standIns.map(\.process) + relays.map(\.process) + helpers where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for (name, agent) in agents { statuses[name] = await Self.stop(agent) }
        for master in masters { statuses[master.name] = await Self.stop(master.process) }
        return statuses
    }

    func close() async {
        _ = await stopAll()
        store.shutdown()
        await database.drop()
        await vhost.delete()
        if ProcessInfo.processInfo.environment["BUILDD_TEST_KEEP"] == nil { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Waits until no build is active; returns whether that happened within `timeout`.
    func waitForQuiet(timeout: Duration) async throws -> Bool {
        try await eventually(timeout: timeout, interval: .milliseconds(250)) {
            let counts = try await self.store.buildCounts()
            return counts.filter { BuildStatus(rawValue: $0.key)?.isActive == true }.values.reduce(0, +) == 0
        }
    }
}

/// A TCP relay a test can cut and heal (Tests/Support/tcp-relay.py): a cut resets the client's connections
/// at once, leaves the server's sides open and unanswered for a while (the server hears nothing, as in a
/// partition), and never answers new connections.
struct TCPRelay {
    let process: Process
    /// Where it prints what it did.
    let log: String
    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
    func cut() { kill(process.processIdentifier, SIGUSR1) }
    /// Cuts at the next statement a client sends inside a transaction (or in 2 s if none does): the server's
    /// side is left idle in that transaction, holding its locks.
    func cutInsideATransaction() { kill(process.processIdentifier, SIGHUP) }
    func heal() { kill(process.processIdentifier, SIGUSR2) }
}

/// DESIGN.md's invariants: none lost, none completed twice, one accepted start per attempt, and no
/// builder running two builds at once.
func checkInvariants(_ store: BuilddStore, builds: Int) async throws {
    let final = try await store.database.query("""
        SELECT build_id, count(*) AS n FROM build_event
         WHERE status IN ('FULLYBUILT', 'FAILEDTOBUILD', 'MANUALDEPWAIT', 'CHROOTWAIT', 'CANCELLED')
         GROUP BY build_id
        """).rows
    #expect(final.count == builds, "every build ended")
    for row in final { #expect(try row.int("n") == 1, "build \(row["build_id"] ?? "") completed once") }

    let starts = try await store.database.query("""
        SELECT build_id, attempt, count(*) AS n FROM build_event WHERE status = 'BUILDING' GROUP BY 1, 2
        """).rows
    for row in starts { #expect(try row.int("n") == 1, "one accepted start per attempt") }

    let intervals = try await store.database.query("""
        SELECT e.builder, extract(epoch FROM e.at) AS started,
               (SELECT extract(epoch FROM min(f.at)) FROM build_event f
                 WHERE f.build_id = e.build_id AND f.id > e.id AND f.status NOT IN ('GATHERING', 'BUILDING')) AS ended
          FROM build_event e WHERE e.status = 'BUILDING' ORDER BY e.builder, e.at
        """).rows
    var lastEnd: [String: Double] = [:]
    for row in intervals {
        let builder = try row.string("builder")
        let started = try row.double("started")
        #expect(started >= (lastEnd[builder] ?? 0), "\(builder) ran two builds at once")
        lastEnd[builder] = row.optionalDouble("ended") ?? .infinity
    }
}

/// The best-scored waiting build of each processor was dispatched first (builds queued before any agent).
func checkDispatchOrder(_ store: BuilddStore, processors: [Int64: (processor: String, score: Int)]) async throws {
    let dispatches = try await store.database.query("""
        SELECT e.build_id FROM build_event e WHERE e.message = 'dispatched' AND e.attempt = 1 ORDER BY e.id
        """).rows.map { try $0.int64("build_id") }
    for processor in Set(processors.values.map(\.processor)) {
        let order = dispatches.filter { processors[$0]?.processor == processor }
        let best = order.sorted { (processors[$0]!.score, -$0) > (processors[$1]!.score, -$1) }
        #expect(order == best, "\(processor) dispatched in score order")
    }
}

/// Something a test must release whether it passes or fails.
protocol TestResource {
    func close() async
}

/// Runs `body` and then closes `resource` (for a farm: stops its processes, drops its database and vhost),
/// also when `body` throws, so no master or agent outlives its test.
func closing(_ resource: some TestResource, _ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch {
        await resource.close()
        throw error
    }
    await resource.close()
}

extension BuilddStore {
    /// Adds processors with an ubuntu/noble arch series each (the farms of these tests).
    func addNobleProcessors(_ processors: [String]) async throws {
        for processor in processors {
            try await addProcessor(processor)
            try await addArchSeries(distribution: "ubuntu", series: "noble", archTag: processor, processor: processor)
        }
    }
}

/// A launchpad-buildd stand-in process: builders at http://127.0.0.1:PORT/NAME, scripted through its
/// control API (see Tests/Support/buildd-standin.py).
final class LegacyStandIn: @unchecked Sendable {
    // Immutable after init; Process is used only to stop it.
    let port: Int
    let process: Process

    init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    func url(_ builder: String) -> String { "http://127.0.0.1:\(port)/\(builder)" }

    /// Sets a builder's script and returns its state: `state`, `build_id`, `calls` (method and simple arguments).
    @discardableResult
    func control(_ builder: String, _ script: [String: Any]? = nil) async throws -> [String: Any] {
        let url = "http://127.0.0.1:\(port)/control/\(builder)"
        let body = try script.map { try JSONSerialization.data(withJSONObject: $0) }
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: body == nil ? "GET" : "POST", url: url,
                                      body: body.map { .bytes(Array($0)) } ?? .none, timeoutSeconds: 5)
        }
        guard response.status == 200 else { throw SimpleHTTPClient.Failure(description: "control \(builder): \(response.status)") }
        return (try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]) ?? [:]
    }

    /// Scripts per build cookie, one per attempt (the last one stays).
    func scriptBuilds(_ scripts: [String: [[String: Any]]]) async throws {
        let body = try JSONSerialization.data(withJSONObject: scripts)
        let url = "http://127.0.0.1:\(port)/control/_builds"
        let response = try await runBlocking {
            try SimpleHTTPClient.send(method: "POST", url: url, body: .bytes(Array(body)), timeoutSeconds: 5)
        }
        guard response.status == 200 else { throw SimpleHTTPClient.Failure(description: "control _builds: \(response.status)") }
    }

    /// The XML-RPC methods a builder was called with, in order.
    func calls(_ builder: String) async throws -> [String] {
        ((try await control(builder)["calls"] as? [[Any]]) ?? []).compactMap { $0.first as? String }
    }
}
