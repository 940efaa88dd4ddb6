import AMQP
import BuilddShared
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Settings of the legacy adapter.
public struct LegacyAdapterConfiguration: Sendable {
    /// How often each legacy builder is polled. Default 5 s (Launchpad's scanner: 15 s).
    public var pollInterval: Duration = .seconds(5)
    public var limits = LegacyCallLimits()
    public var deadlines = LegacyPolicy.Deadlines()
    /// The clock the followers judge progress by (seconds; only differences count). Tests inject their own.
    public var clock: @Sendable () -> Double = { (ContinuousClock.now - legacyClockOrigin).inSeconds }
    /// How long this master's claim on a legacy builder lasts without renewal; another master takes the
    /// builder over after that. Default 10 s.
    public var ownershipSeconds = 10

    public init() {}
}

/// Figures of the adapter since it started (polls, how late they ran, faults).
public struct LegacyStats: Sendable {
    public var builders = 0
    public var polls = 0
    public var faults = 0
    /// How late polls started against their schedule, in seconds (the last 65,536).
    public var lags: [Double] = []
    public var lagCursor = 0

    mutating func record(lag: Double) {
        if lags.count < 65_536 { lags.append(lag) } else { lags[lagCursor] = lag; lagCursor = (lagCursor + 1) % 65_536 }
    }

    /// The `fraction` quantile of the recorded lags, in seconds.
    public func lag(quantile fraction: Double) -> Double {
        guard !lags.isEmpty else { return 0 }
        let sorted = lags.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
    }
}

/// Follows launchpad-buildd builders for this master: claims them (one master per builder, taken over
/// when its master stops renewing), polls each at the configured interval, hands idle ones the next
/// job of their processor from the same queue agents take from, and turns what they say into the same
/// events agents send, applied through the same store code. A fault of a builder (an XML-RPC Fault, a
/// timeout, a refused connection, an HTTP error, an unreadable answer) is a broken-builder event: its
/// build is failed as BUILDERFAIL (failure counting requeues it) and the reason goes to failnotes.
public final class LegacyAdapter: Sendable {
    let store: BuilddStore
    let broker: AMQPClient
    let artifacts: ArtifactStore
    let master: MasterConfiguration
    let configuration: LegacyAdapterConfiguration
    let logger: Logger
    let followers = Mutex<[Int: LegacyFollower]>([:])
    let observedStates = Mutex<[Int: AgentState]>([:])
    let emptyQueues = Mutex<[String: ContinuousClock.Instant]>([:])
    public let stats = Mutex(LegacyStats())

    public init(store: BuilddStore, broker: AMQPClient, artifacts: ArtifactStore, master: MasterConfiguration,
                logger: Logger) {
        self.store = store
        self.broker = broker
        self.artifacts = artifacts
        self.master = master
        configuration = master.legacy
        self.logger = logger
    }

    /// Claims, follows and releases legacy builders until cancelled.
    public func run() async {
        let tick = min(configuration.pollInterval, .seconds(2))
        await withDiscardingTaskGroup { group in
            group.addTask { await self.reportStats() }
            while !Task.isCancelled {
                let takenAt = ContinuousClock.now
                do {
                    let snapshots = try await store.claimLegacyBuilders(master: master.name,
                                                                        leaseSeconds: configuration.ownershipSeconds)
                    for follower in distribute(snapshots, takenAt: takenAt) {
                        group.addTask { await follower.run() }
                    }
                    let states = observedStates.withLock { states in
                        defer { states.removeAll() }
                        return states.map { (builderID: $0.key, state: $0.value) }
                    }
                    try await store.recordLegacyStates(states)
                } catch {
                    logger.warning("legacy builders not claimed", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: tick)
            }
            for follower in followers.withLock({ Array($0.values) }) { follower.release() }
        }
        do {
            try await store.releaseLegacyBuilders(master: master.name)
        } catch {
            logger.warning("legacy builders not released; their lease runs out", metadata: ["error": "\(error)"])
        }
    }

    /// Hands each follower its new snapshot; returns followers to start; releases builders no longer ours.
    private func distribute(_ snapshots: [LegacyBuilderSnapshot], takenAt: ContinuousClock.Instant) -> [LegacyFollower] {
        var started: [LegacyFollower] = []
        var released: [LegacyFollower] = []
        followers.withLock { followers in
            let owned = Set(snapshots.map(\.id))
            for (id, follower) in followers where !owned.contains(id) {
                released.append(follower)
                followers[id] = nil
            }
            for snapshot in snapshots {
                if let follower = followers[snapshot.id], follower.url == snapshot.url {
                    follower.update(snapshot, takenAt: takenAt)
                    continue
                }
                if let stale = followers[snapshot.id] { released.append(stale) }
                do {
                    let follower = try LegacyFollower(adapter: self, snapshot: snapshot, takenAt: takenAt)
                    followers[snapshot.id] = follower
                    started.append(follower)
                } catch {
                    logger.warning("legacy builder has a bad URL", metadata: ["builder.name": "\(snapshot.name)",
                                                                             "error": "\(error)"])
                }
            }
        }
        for follower in released {
            follower.release()
            logger.info("legacy builder no longer followed here", metadata: ["builder.name": "\(follower.name)"])
        }
        for follower in started {
            logger.info("following legacy builder", metadata: ["builder.name": "\(follower.name)",
                                                               "builder.url": "\(follower.url)"])
        }
        stats.withLock { $0.builders = snapshots.count }
        return started
    }

    func observed(_ builderID: Int, _ state: AgentState) {
        observedStates.withLock { $0[builderID] = state }
    }

    /// Takes the next job of `queue` (a processor's, or a builder's control queue) unless it was seen empty a moment ago (so a thousand idle
    /// builders do not each ask an empty queue every poll).
    func nextJob(queue: String) async throws -> Delivery? {
        let now = ContinuousClock.now
        if let until = emptyQueues.withLock({ $0[queue] }), until > now { return nil }
        let delivery = try await broker.get(queue: queue)
        if delivery == nil {
            emptyQueues.withLock { $0[queue] = now + min(configuration.pollInterval / 2, .milliseconds(500)) }
        }
        return delivery
    }

    private func reportStats() async {
        var last = stats.withLock { $0.polls }
        let every = Duration.seconds(10)
        while !Task.isCancelled {
            try? await Task.sleep(for: every)
            let now = stats.withLock { $0 }
            guard now.builders > 0, !Task.isCancelled else { continue }
            logger.info("legacy builders polled", metadata: [
                "builders": "\(now.builders)", "polls.per_second": "\(Double(now.polls - last) / 10)",
                "lag.p50_ms": "\(Int(now.lag(quantile: 0.5) * 1000))", "lag.p99_ms": "\(Int(now.lag(quantile: 0.99) * 1000))",
                "faults": "\(now.faults)"])
            last = now.polls
        }
    }
}

/// Follows one legacy builder: one task, one keep-alive connection, one call at a time.
final class LegacyFollower: @unchecked Sendable {
    // `snapshot`/`takenAt`/`released` are shared with the adapter's tick (under `shared`); everything
    // else is touched only by the follower's own task.
    private let shared: Mutex<(snapshot: LegacyBuilderSnapshot, takenAt: ContinuousClock.Instant, released: Bool)>
    unowned let adapter: LegacyAdapter
    let id: Int
    let name: String
    let url: String
    let client: LegacyBuilderClient
    let session = "legacy-" + randomHexToken(bytes: 6)
    private var seq: Int64 = 0
    private var verified = false
    /// Whether a fault was counted since the last good answer (the count itself is the builder's stored
    /// standing, ``BuilderStanding/idleFaults``, which the snapshot shows after a restart or a takeover).
    private var hadFault = false
    /// The build this follower started or finished after the last snapshot was taken.
    private var local: (build: LegacyBuilderSnapshot.CurrentBuild?, at: ContinuousClock.Instant)?
    private var abortSent: (Int64, Int32)?
    /// Whether this follower has said the builder is idle since it started following it: a builder whose last
    /// build was requeued without it (a lease that ran out under another master) is still DIRTY, and only a
    /// report of it idle makes it CLEAN again (``BuilderReset/whenIdle(_:)``), before it accepts a job.
    private var saidIdle = false
    private var lastHeartbeat: ContinuousClock.Instant?
    private var progress = LegacyProgress()
    private var logger: Logger

    init(adapter: LegacyAdapter, snapshot: LegacyBuilderSnapshot, takenAt: ContinuousClock.Instant) throws {
        self.adapter = adapter
        id = snapshot.id
        name = snapshot.name
        url = snapshot.url
        client = try LegacyBuilderClient(url: snapshot.url, limits: adapter.configuration.limits)
        shared = Mutex((snapshot, takenAt, false))
        logger = adapter.logger
        logger[metadataKey: "builder.name"] = "\(snapshot.name)"
    }

    func update(_ snapshot: LegacyBuilderSnapshot, takenAt: ContinuousClock.Instant) {
        shared.withLock { $0.snapshot = snapshot; $0.takenAt = takenAt }
    }

    func release() { shared.withLock { $0.released = true } }

    func run() async {
        let clock = ContinuousClock()
        let interval = adapter.configuration.pollInterval
        // Spread the first polls over one interval so a thousand builders are not asked at once.
        var next = clock.now + interval * Double.random(in: 0..<1)
        while !Task.isCancelled, !shared.withLock({ $0.released }) {
            try? await Task.sleep(until: next, clock: clock)
            let lag = clock.now - next
            adapter.stats.withLock { $0.polls += 1; $0.record(lag: lag.inSeconds) }
            BuilddMetrics.legacyPoll()
            await pollOnce()
            next += interval
            if next < clock.now { next = clock.now }  // fell behind: no burst to catch up
        }
        client.close()
    }

    /// The snapshot, with this follower's own later changes laid over it.
    private func current() -> (LegacyBuilderSnapshot, LegacyBuilderSnapshot.CurrentBuild?) {
        let (snapshot, takenAt, _) = shared.withLock { $0 }
        if let local, local.at > takenAt { return (snapshot, local.build) }
        return (snapshot, snapshot.current)
    }

    private func setLocal(_ build: LegacyBuilderSnapshot.CurrentBuild?) {
        local = (build, ContinuousClock.now)
    }

    func pollOnce() async {
        let (snapshot, expected) = current()
        guard snapshot.builderok else {
            verified = false
            return
        }
        do {
            if !verified {
                guard try await verify(snapshot) else { return }
                verified = true
            }
            let status = try await client.status()
            let stalled = progress.observe(status.reading, now: adapter.configuration.clock())
            let step = LegacyPolicy.decide(
                status, expected: expected, abortSent: expected.map { build in abortSent.map { $0 == (build.buildID, build.attempt) } ?? false } ?? false,
                stalledFor: stalled, mayTakeWork: !snapshot.manual, deadlines: adapter.configuration.deadlines)
            let seen: AgentState = switch status.state {
            case .idle: .idle
            case .building, .waiting: .building
            case .aborting: .aborting
            }
            adapter.observed(id, seen)
            try await carryOut(step, status: status, snapshot: snapshot, expected: expected)
            if hadFault || snapshot.idleFaults > 0 {
                try await adapter.store.forgiveLegacyFaults(builderID: id)
                hadFault = false
            }
        } catch let error as LegacyCallError {
            BuilddMetrics.legacyFault(error.kind)
            await fault("\(error)")
        } catch {
            logger.warning("legacy builder not followed this time (database or broker)", metadata: ["error": "\(error)"])
        }
    }

    /// `echo` and `info` before the first job, as the original master did. False when the builder is
    /// not what it was registered as (it is then failed with the reason).
    private func verify(_ snapshot: LegacyBuilderSnapshot) async throws -> Bool {
        let probe: [XMLRPCValue] = [.string("buildd"), .int(1)]
        let echoed = try await client.echo(probe)
        guard echoed == probe else {
            throw LegacyCallError(method: "echo", underlying: XMLRPCError.malformed("echo() answered something else"))
        }
        let info = try await client.info()
        var problem: String?
        if info.protocolVersion != "1.0" {
            problem = "speaks protocol \(info.protocolVersion), not 1.0"
        } else if !snapshot.archTags.contains(info.archTag) && !snapshot.processors.contains(info.archTag) {
            problem = "info() says architecture \(info.archTag); registered for \(snapshot.processors.joined(separator: ","))"
                + (snapshot.archTags.isEmpty ? "" : " (arch tags \(snapshot.archTags.joined(separator: ",")))")
        }
        if let problem {
            logger.warning("legacy builder refused", metadata: ["reason": "\(problem)"])
            try await adapter.store.markBuilderFailed(name, reason: problem)
            return false
        }
        logger.info("legacy builder verified", metadata: ["builder.arch": "\(info.archTag)",
                                                          "builder.types": "\(info.buildTypes.joined(separator: ","))"])
        return true
    }

    private func carryOut(_ step: LegacyPolicy.Step, status: LegacyStatus, snapshot: LegacyBuilderSnapshot,
                          expected: LegacyBuilderSnapshot.CurrentBuild?) async throws {
        switch step {
        case .wait:
            break
        case .takeJob:
            try await takeJob(snapshot)
        case .building(let abort):
            guard let expected else { return }
            try await heartbeat(expected, tail: status.logTail)
            if abort {
                logger.info("asking legacy builder to abort", metadata: ["build.id": "\(expected.buildID)"])
                try await client.abort()
                abortSent = (expected.buildID, expected.attempt)
            }
        case .collect(let result):
            guard let expected else { return }
            try await collect(expected, status: status, result: result)
            // Clean and idle now: no need to wait a poll for the next job.
            if !snapshot.manual { try await takeJob(snapshot) }
        case .lost(let reason, let then):
            logger.warning("legacy builder lost its build", metadata: ["reason": "\(reason)"])
            _ = try await apply(.heartbeat, state: .idle, message: reason)
            setLocal(nil)
            try await cleanup(then)
        case .cleanup(let what):
            try await cleanup(what)
        case .wedged(let reason):
            logger.warning("legacy builder wedged", metadata: ["reason": "\(reason)"])
            if let expected {
                _ = try await apply(.finished, build: expected, result: .builderFail, message: reason)
                setLocal(nil)
            }
            try await adapter.store.markBuilderFailed(name, reason: reason)
            verified = false
        }
    }

    private func cleanup(_ what: LegacyPolicy.Cleanup) async throws {
        switch what {
        case .none: break
        case .clean:
            try await client.clean()
            // Clean and idle now: the core decides what that makes it (CLEAN, or DIRTY until its reset).
            _ = try await apply(.heartbeat, state: .idle)
        case .abort:
            try await client.abort()
        }
    }

    /// Takes the next job of one of the builder's processors (or the next addressed to it, when it does not
    /// take the shared queues), accepts it and starts it on the builder.
    private func takeJob(_ snapshot: LegacyBuilderSnapshot) async throws {
        if !saidIdle {
            _ = try await apply(.heartbeat, state: .idle)
            saidIdle = true
        }
        let queues = snapshot.takesSharedQueue ? snapshot.processors.map { BrokerTopology.jobQueue(processor: $0) }
            : [BrokerTopology.controlQueue(builder: snapshot.name)]
        for queue in queues {
            guard let delivery = try await adapter.nextJob(queue: queue) else { continue }
            // A control queue also gets aborts; the adapter stops its builders' builds itself.
            if delivery.properties.type == "control" {
                try? await adapter.broker.ack(delivery)
                continue
            }
            let job: JobMessage
            do {
                job = try WireCodec.decodeJob(delivery.body)
            } catch {
                logger.warning("job dead-lettered", metadata: ["error": "\(error)", "queue": "\(queue)"])
                try? await adapter.broker.reject(delivery, requeue: false)
                continue
            }
            let build = LegacyBuilderSnapshot.CurrentBuild(buildID: job.buildID, attempt: job.attempt,
                                                           buildType: job.buildType, cancelling: false, runningSeconds: 0)
            // The key launchpad-buildd's ensurepresent sends as its password: the attempt's sources open to it
            // alone (``AttemptCredential``), not to the job message's readers.
            let key = randomHexToken(bytes: 32)
            let outcome: EventOutcome
            do {
                outcome = try await apply(.accepted, build: build, uploadKeySHA256: SHA256.hex(of: key))
            } catch {
                try? await adapter.broker.reject(delivery, requeue: true)
                throw error
            }
            try await adapter.broker.ack(delivery)
            guard case .applied = outcome else {
                logger.info("stale job dropped", metadata: ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)"])
                continue
            }
            setLocal(build)
            lastHeartbeat = ContinuousClock.now
            try await start(job, build: build, key: key)
            return
        }
    }

    /// `ensurepresent` for the chroot and every source, then `build`.
    private func start(_ job: JobMessage, build: LegacyBuilderSnapshot.CurrentBuild, key: String) async throws {
        guard let details = try await adapter.store.legacyDispatchDetails(buildID: job.buildID) else { return }
        let base = adapter.master.artifactBaseURL
        guard let chroot = details.chroot, let chrootSHA1 = chroot.sha1 else {
            let reason = "no chroot for \(details.distribution)/\(details.series)/\(details.archTag): "
                + "set one with `buildd-master archseries chroot`"
            _ = try await apply(.finished, build: build, result: .chrootFail, message: reason)
            setLocal(nil)
            return
        }
        let (present, info) = try await client.ensurePresent(sha1: chrootSHA1, url: "\(base)/v1/chroots/\(chrootSHA1)",
                                                             user: "buildd", password: "")
        guard present else {
            throw LegacyCallError(method: "ensurepresent", underlying: LegacyHTTPError.io("chroot \(chrootSHA1) not fetched: \(info)"))
        }
        var filemap: [String: String] = [:]
        for source in details.sources {
            let sha1 = try await sourceSHA1(buildID: job.buildID, source)
            let url = "\(base)/v1/builds/\(job.buildID)/attempts/\(job.attempt)/sources/\(source.name)"
            let (present, info) = try await client.ensurePresent(sha1: sha1, url: url, user: "buildd", password: key)
            guard present else {
                throw LegacyCallError(method: "ensurepresent", underlying: LegacyHTTPError.io("\(source.name) not fetched: \(info)"))
            }
            filemap[source.name] = sha1
        }
        let arguments = LegacyBuildArguments.of(details)
        let answer = try await client.build(cookie: build.cookie, buildType: details.buildType, chrootSHA1: chrootSHA1,
                                            filemap: filemap, arguments: arguments)
        guard answer.status == "BuilderStatus.BUILDING" else {
            throw LegacyCallError(method: "build", underlying: LegacyHTTPError.io("\(answer.status): \(answer.info)"))
        }
        logger.info("legacy build started", metadata: ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)",
                                                       "build.cookie": "\(build.cookie)"])
    }

    private func sourceSHA1(buildID: Int64, _ source: LegacyDispatchDetails.File) async throws -> String {
        if let sha1 = source.sha1 { return sha1 }
        let path = adapter.artifacts.path(sha256: source.sha256)
        let sha1 = try await runBlocking(name: "sha1") { try hashFile(path) }
        try await adapter.store.setSourceSHA1(buildID: buildID, name: source.name, sha1: sha1)
        return sha1
    }

    private func heartbeat(_ build: LegacyBuilderSnapshot.CurrentBuild, tail: [UInt8]?) async throws {
        let now = ContinuousClock.now
        // A third of the lease (at most 10 s) keeps it with two heartbeats to spare; each is a commit.
        let every = min(Duration.seconds(10), .seconds(adapter.master.leaseSeconds) / 3)
        if let lastHeartbeat, now - lastHeartbeat < every { return }
        lastHeartbeat = now
        let text = tail.map { String(decoding: $0.suffix(2048), as: UTF8.self) }
        let outcome = try await apply(.heartbeat, build: build, state: .building, logTail: text)
        if case .abort(_, _, let reason) = outcome {
            logger.warning("legacy build is not current; aborting it", metadata: ["reason": "\(reason)"])
            setLocal(nil)
            try await client.abort()
        }
    }

    /// Fetches the result files (checking each SHA-1), stores them like agents' uploads, reports the
    /// result, then cleans the builder.
    private func collect(_ build: LegacyBuilderSnapshot.CurrentBuild, status: LegacyStatus,
                         result: BuilderResult) async throws {
        var files: [FileDigest] = []
        if [.ok, .packageFail, .depFail].contains(result) {
            for (name, sha1) in status.filemap.sorted(by: { $0.key < $1.key }) {
                guard Naming.isValidFileName(name) else {
                    throw LegacyCallError(method: "status", underlying: XMLRPCError.malformed("unsafe file name in filemap"))
                }
                files.append(try await client.fetch(sha1, sha1: sha1, into: adapter.artifacts, as: name))
            }
        }
        var log: FileDigest?
        do {
            let bytes = try await client.fetch("buildlog")
            let name = try await adapter.store.logName(buildID: build.buildID)
            log = try await store(bytes, name: name)
        } catch {
            logger.warning("build log not collected", metadata: ["build.id": "\(build.buildID)", "error": "\(error)"])
        }
        let message: String? = switch result {
        case .depFail: status.dependencies.map { "missing dependencies: \($0)" }
        case .ok: nil
        default: "legacy builder reported \(result.rawValue)"
        }
        // The files are recorded and the result applied in one transaction (which also marks the builder clean).
        _ = try await apply(.finished, build: build, result: result, files: files, log: log, message: message,
                            recordingFiles: true)
        setLocal(nil)
        logger.info("legacy build collected", metadata: ["build.id": "\(build.buildID)", "result": "\(result.rawValue)",
                                                         "files": "\(files.count)"])
        try await client.clean()
    }

    private func store(_ bytes: [UInt8], name: String) async throws -> FileDigest {
        let artifacts = adapter.artifacts
        return try await runBlocking(name: "artifact") { try artifacts.importBytes(bytes, name: name) }
    }

    /// A fault of the builder: its build (if any) ends BUILDERFAIL through failure counting and is
    /// requeued; without a build, the fault is counted against the builder. The reason goes to failnotes.
    private func fault(_ reason: String) async {
        verified = false
        hadFault = true
        client.close()
        adapter.stats.withLock { $0.faults += 1 }
        let (_, expected) = current()
        logger.warning("legacy builder fault", metadata: ["reason": "\(reason)",
                                                          "build.id": "\(expected.map { String($0.buildID) } ?? "")"])
        do {
            if let expected {
                _ = try await apply(.finished, build: expected, result: .builderFail, message: reason)
                setLocal(nil)
                try await adapter.store.noteLegacyFault(builderID: id, reason: reason)
            } else {
                if try await adapter.store.countLegacyBuilderFault(builderID: id, reason: reason) {
                    logger.warning("legacy builder failed too often; no more work until enabled", metadata: ["reason": "\(reason)"])
                }
            }
        } catch {
            logger.warning("legacy fault not recorded", metadata: ["error": "\(error)"])
        }
    }

    /// Applies an event for this builder through the same code as agents' events.
    private func apply(_ kind: AgentEventKind, build: LegacyBuilderSnapshot.CurrentBuild? = nil, state: AgentState? = nil,
                       logTail: String? = nil, result: BuilderResult? = nil, files: [FileDigest]? = nil,
                       log: FileDigest? = nil, message: String? = nil, uploadKeySHA256: String? = nil,
                       recordingFiles: Bool = false) async throws -> EventOutcome {
        seq += 1
        let event = AgentEvent(kind: kind, builder: name, session: session, seq: seq, state: state,
                               buildID: build?.buildID, attempt: build?.attempt, logTail: logTail, result: result,
                               files: kind == .finished ? (files ?? []) : nil, log: log, message: message,
                               uploadKeySHA256: uploadKeySHA256)
        let outcome = try await adapter.store.apply(event, userID: nil, leaseSeconds: adapter.master.leaseSeconds,
                                                    legacy: true, recordingFiles: recordingFiles)
        switch outcome {
        case .applied(let what): if kind != .heartbeat { logger.info("legacy event applied: \(what)") }
        case .ignored(let why): logger.info("legacy event ignored: \(why)")
        case .abort(_, _, let why): logger.info("legacy event refused: \(why)")
        case .rejected(let why): logger.warning("legacy event rejected: \(why)")
        }
        return outcome
    }
}

/// SHA-1 of a file, read in chunks.
func hashFile(_ path: String) throws -> String {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { throw ArtifactStore.Failure(description: "cannot read \(path)") }
    defer { close(descriptor) }
    var hasher = SHA1()
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let count = read(descriptor, &chunk, chunk.count)
        if count < 0 { throw ArtifactStore.Failure(description: "cannot read \(path)") }
        if count == 0 { break }
        hasher.update(chunk[0..<count])
    }
    return hasher.finalizeHex()
}

/// The `build()` arguments launchpad-buildd expects, by build type (Launchpad's build behaviours): every
/// type gets the common ones; a binary package build gets its archive, pocket and component as well.
enum LegacyBuildArguments {
    static func of(_ details: LegacyDispatchDetails) -> [String: XMLRPCValue] {
        let suite = details.pocket == "release" ? details.series : "\(details.series)-\(details.pocket)"
        var arguments: [String: XMLRPCValue] = [
            "arch_tag": .string(details.archTag), "series": .string(details.series),
            "distribution": .string(details.distribution), "suite": .string(suite),
            "archive_private": .bool(details.archivePurpose == "private"),
            "archives": .array(details.archives.map { .string($0) }),
        ]
        switch details.buildType {
        case "binarypackage":
            arguments["ogrecomponent"] = .string(details.component)
            arguments["archive_purpose"] = .string(details.archivePurpose.uppercased())
            arguments["build_debug_symbols"] = .bool(details.buildDebugSymbols)
            arguments["arch_indep"] = .bool(details.archIndep)
        default:
            break
        }
        return arguments
    }
}

/// The origin of the legacy followers' default clock (``LegacyAdapterConfiguration/clock``): seconds since it on
/// the continuous clock.
private let legacyClockOrigin = ContinuousClock.now
