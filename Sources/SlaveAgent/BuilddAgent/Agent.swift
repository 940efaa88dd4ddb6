import AMQP
import BuilddShared
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The build agent: takes one job at a time from its processors' queues, builds it, uploads the results
/// and reports, following DESIGN.md's dispatch contract.
///
/// A job message is acked right after `accepted` is confirmed (never held for a whole build), and job
/// consumers are cancelled while a build runs, so the broker hands this agent nothing else meanwhile.
public final class Agent: Sendable {
    public let configuration: AgentConfiguration
    let logger: Logger
    let client: AMQPClient
    /// Whether builds run in a PID namespace of their own (user namespaces are allowed here).
    let isolated: Bool
    /// The CAs the masters' HTTPS certificates are checked against, set up at the first HTTPS request (an
    /// agent of plain http masters never pays for OpenSSL's state); nil until then, and for the system's store.
    let trustBox = Mutex<TLSTrust?>(nil)
    let session = randomHexToken(bytes: 8)
    let box: StateBox
    let stateFile: AgentStateFile
    /// A build held when the agent last stopped, to report first.
    let recovered: PersistedBuild?

    final class StateBox: Sendable {
        let state = Mutex(State())
        let seq = Mutex<Int64>(0)
    }

    struct State {
        var current: CurrentBuild?
        /// The connection generation whose job consumers are running, if any.
        var jobConsumersGeneration: Int?
        var stopping = false
        /// Its `reset_command` runs (``Agent/runReset(attempt:)``).
        var resetting = false
    }

    struct CurrentBuild {
        let job: JobMessage
        var process: BuildProcess?
        var aborted = false
        /// Set when the build was stopped for running too long or logging too much.
        var limitExceeded: String?
        /// Where the master's view of this build stands, as fixed by the events already sent: status events
        /// name the build only between `accepted` and `finished`, so they never contradict those two.
        var phase = Phase.accepting

        enum Phase { case accepting, running, reported }
    }

    /// Grace between SIGTERM and SIGKILL when a build is aborted.
    public static let abortGrace: Duration = .seconds(10)

    /// Take one job, report it, and stop (`run --one-shot`): for a machine an autoscaler made for one build.
    public let oneShot: Bool

    public init(configuration: AgentConfiguration, logger: Logger, oneShot: Bool = false) throws {
        self.oneShot = oneShot
        self.configuration = configuration
        self.logger = logger
        for warning in configuration.warnings { logger.warning("insecure setting", metadata: ["warning": "\(warning)"]) }
        let box = StateBox()
        self.box = box
        if geteuid() == 0 && configuration.buildUser == nil {
            throw AgentConfiguration.Invalid(problems: [
                "[agent] build_user is required when the agent runs as root: a build never runs as root or as the agent's user"])
        }
        if geteuid() != 0 {
            logger.warning("insecure setting", metadata: ["warning": "\(AgentConfiguration.buildsAsAgentWarning)"])
        }
        let buildUser = try Self.buildUser(configuration)
        isolated = BuildProcess.canIsolate(as: buildUser)
        if !isolated {
            logger.warning("insecure setting", metadata: ["warning": "user namespaces are not allowed here: builds run without a PID namespace, and processes a build leaves in another process group may outlive it"])
        }
        try makeDirectories(configuration.workDirectory)
        // Builds (as the build user) may pass through the work folder to their own, and see nothing else in it:
        // the state file, the logs and the chroot cache are the agent's alone.
        chmod(configuration.workDirectory, 0o711)
        try makeDirectories(configuration.workDirectory + "/logs")
        chmod(configuration.workDirectory + "/logs", 0o700)
        stateFile = AgentStateFile(path: configuration.workDirectory + "/agent-state.json")
        recovered = stateFile.load()
        if let recovered {
            // Until it is reported, the recovered build is this agent's: no new job is taken.
            box.state.withLock {
                $0.current = CurrentBuild(job: recovered.job, process: nil, aborted: false, limitExceeded: nil,
                                          phase: .running)
            }
        }
        let amqp = try AMQPConfiguration(nodes: configuration.brokerNodes,
                                         heartbeat: .seconds(10), timeout: .seconds(10),
                                         connectionName: "buildd-agent-\(configuration.name)")
        let configuration = configuration
        client = AMQPClient(configuration: amqp, logger: logger) { connection in
            // Masters declare and bind the agent's queues; the agent only checks they are there.
            try BrokerTopology.requireQueue(BrokerTopology.controlQueue(builder: configuration.name), on: connection)
            for processor in configuration.processors where configuration.sharedQueue {
                try BrokerTopology.requireQueue(BrokerTopology.jobQueue(processor: processor), on: connection)
            }
            // One unacked message per consumer. Not a channel-wide (global) limit: quorum queues - the farm's
            // type with deploy/rabbitmq/definitions.json - refuse global QoS (540 NOT_IMPLEMENTED), which
            // kept every agent of such a farm from ever consuming. An agent of several processors may so be
            // handed a second job before it has cancelled its job consumers; handleJob gives that one back
            // at once (reject, requeue), so it still builds one job at a time.
            try connection.qos(prefetch: 1, global: false, channel: AMQPClient.consumeChannel)
            try connection.consume(queue: BrokerTopology.controlQueue(builder: configuration.name),
                                   consumerTag: "control", channel: AMQPClient.consumeChannel)
            let idle = box.state.withLock { $0.current == nil && !$0.stopping }
            if idle {
                try Self.consumeJobs(connection, configuration)
                box.state.withLock { $0.jobConsumersGeneration = connection.generation }
            } else {
                box.state.withLock { $0.jobConsumersGeneration = nil }
            }
        }
    }

    static func consumeJobs(_ connection: AMQPConnection, _ configuration: AgentConfiguration) throws {
        // A builder that does not take the shared queues gets its jobs on its control queue alone.
        guard configuration.sharedQueue else { return }
        for processor in configuration.processors {
            try connection.consume(queue: BrokerTopology.jobQueue(processor: processor), consumerTag: "job.\(processor)",
                                   channel: AMQPClient.consumeChannel)
        }
    }

    // MARK: Running

    /// Runs until ``shutdown()``: a running build is given back (GIVENBACK) so the master requeues it at once.
    public func run() async throws {
        client.start()
        logger.info("agent starting", metadata: ["builder.name": "\(configuration.name)",
                                                 "processors": "\(configuration.processors.joined(separator: ","))",
                                                 "broker.url": "\(configuration.brokerURL)"])
        await withTaskGroup(of: Void.self) { group in
            if let recovered { group.addTask { await self.recover(recovered) } }
            group.addTask { await self.consumeDeliveries() }
            group.addTask {
                for await event in self.client.connectionEvents {
                    if case .connected = event { await self.sendStatus(.hello) }
                }
            }
            group.addTask { await self.heartbeatLoop() }
            await group.waitForAll()
        }
        logger.info("agent stopped")
    }

    /// Stops taking jobs, gives back a running build, reports it and stops.
    /// Stops taking jobs. A running build is given back at once (policy `giveback`), or allowed to finish
    /// until the shutdown deadline and given back then (policy `finish`). Never dropped silently: the build
    /// task reports it and then stops the client.
    public func shutdown() async {
        let building = box.state.withLock { state -> Bool in
            state.stopping = true
            return state.current != nil
        }
        // Reporting the given-back build, or leaving the broker, may wait for a broker that is gone: the stop
        // is bounded all the same (after the build's own deadline under the `finish` policy).
        let timeout = configuration.stopTimeoutSeconds
            + (building && configuration.shutdownPolicy == .finish ? configuration.shutdownDeadlineSeconds : 0)
        Task {
            try? await Task.sleep(for: .seconds(timeout))
            self.stopNow(reason: "the stop timeout (\(timeout) s) ran out")
        }
        guard building else {
            try? await stopConsumingJobs()
            await client.shutdown()
            return
        }
        // No job is taken while stopping; the consumers are cancelled on the side, so that a broker that is
        // gone (this waits for it) does not hold up giving the build back.
        Task { try? await self.stopConsumingJobs() }
        if configuration.shutdownPolicy == .finish {
            logger.info("shutting down after the running build", metadata: [
                "deadline.seconds": "\(configuration.shutdownDeadlineSeconds)"])
            try? await Task.sleep(for: .seconds(configuration.shutdownDeadlineSeconds))
        }
        let process = box.state.withLock { state -> BuildProcess? in
            guard var current = state.current else { return nil }
            current.aborted = true
            state.current = current
            return current.process
        }
        if let process {
            logger.info("shutting down: giving back the running build")
            process.signalGroup(SIGTERM)
            scheduleKill(process)
        }
    }

    /// Stops the agent at once: the build command's process group is killed and the process exits (status
    /// 1). What was not delivered stays in the state file: a build that was running is given back, and a
    /// result that was ready is delivered, when the agent starts again.
    public func stopNow(reason: String) -> Never {
        let (process, pending) = box.state.withLock { state in
            (state.current?.process, state.current.map { "build \($0.job.buildID) attempt \($0.job.attempt)" })
        }
        if let process { process.signalGroup(SIGKILL) }
        logger.warning("stopping at once: \(reason)", metadata: [
            "undelivered": "\(pending ?? "nothing")", "state.file": "\(stateFile.path)"])
        exit(1)
    }

    private func consumeDeliveries() async {
        for await delivery in client.deliveries {
            if delivery.consumerTag == "control" {
                // Masters address jobs to a builder that does not take the shared queues on its control queue.
                if delivery.properties.type == "job" {
                    await handleJob(delivery, addressed: true)
                } else {
                    await handleControl(delivery)
                }
            } else {
                await handleJob(delivery)
            }
        }
    }

    // MARK: Jobs

    /// A job from a shared queue, or `addressed` to this builder on its control queue. One taken while
    /// another build runs goes back to its queue; an addressed one is dropped instead (its master claims it
    /// again when its accept timeout runs out), as it would come straight back.
    private func handleJob(_ delivery: Delivery, addressed: Bool = false) async {
        let job: JobMessage
        do {
            job = try WireCodec.decodeJob(delivery.body)
        } catch {
            logger.warning("unreadable job dropped", metadata: ["error": "\(error)"])
            try? await client.reject(delivery, requeue: false)
            return
        }
        let metadata: Logger.Metadata = ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)"]
        let key = randomHexToken(bytes: 32)
        let taken = box.state.withLock { state -> Bool in
            guard state.current == nil, !state.stopping else { return false }
            state.current = CurrentBuild(job: job)
            return true
        }
        guard taken else {
            if addressed { logger.warning("addressed job dropped: a build runs here", metadata: metadata) }
            try? await client.reject(delivery, requeue: !addressed)
            return
        }
        do {
            try await stopConsumingJobs()
            try await send(.accepted, state: .building, job: job, uploadKeySHA256: SHA256.hex(of: key)) { state in
                state.current?.phase = .running
            }
            try await client.ack(delivery)
        } catch {
            // Not announced: the broker redelivers the job (or the master claims it again); stay idle.
            logger.warning("could not accept job", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            box.state.withLock { $0.current = nil }
            await startConsumingJobs()
            return
        }
        stateFile.save(PersistedBuild(job: job, finished: nil))
        logger.info("build accepted", metadata: metadata)
        let box = self.box
        let credential = UploadCredential(
            key: key, acceptedAt: .now, window: .seconds(max(job.leaseSeconds, UploadCredential.leastWindowSeconds)),
            stillOurs: { box.state.withLock { $0.current?.aborted == false } })
        Task { await self.build(job, credential) }
    }

    private func stopConsumingJobs() async throws {
        let box = self.box
        let processors = configuration.processors
        try await client.perform { connection in
            guard box.state.withLock({ $0.jobConsumersGeneration }) == connection.generation else { return }
            for processor in processors {
                try connection.cancel(consumerTag: "job.\(processor)", channel: AMQPClient.consumeChannel)
            }
            box.state.withLock { $0.jobConsumersGeneration = nil }
        }
    }

    private func startConsumingJobs() async {
        let box = self.box
        let configuration = self.configuration
        do {
            try await client.perform { connection in
                let state = box.state.withLock { $0 }
                guard state.current == nil, !state.stopping, state.jobConsumersGeneration != connection.generation
                else { return }
                try Self.consumeJobs(connection, configuration)
                box.state.withLock { $0.jobConsumersGeneration = connection.generation }
            }
        } catch {
            // The next connection's setup starts them.
            logger.warning("could not resume job consumers", metadata: ["error": "\(error)"])
        }
    }

    private func scheduleKill(_ process: BuildProcess) {
        Task {
            try? await Task.sleep(for: Self.abortGrace)
            process.signalGroup(SIGKILL)
        }
    }

    // MARK: Building

    private func build(_ job: JobMessage, _ credential: UploadCredential) async {
        let folder = "\(configuration.workDirectory)/build-\(job.buildID)-\(job.attempt)"
        let results = folder + "/results"
        let logName = "buildlog_\(job.distribution)-\(job.series)-\(job.archTag).\(job.sourceName)_\(job.sourceVersion).txt"
        // The log is written outside the build's folder, where the build cannot replace it with a link.
        let logPath = "\(configuration.workDirectory)/logs/build-\(job.buildID)-\(job.attempt).log"
        unlink(logPath)
        var metadata: Logger.Metadata = ["build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)"]
        var result = BuilderResult.builderFail
        var message: String?
        // The master the job came from, found once for all its downloads and uploads; when it is none of
        // the configured masters, the first of them to need it fails.
        let origin: Result<MasterOrigin, any Error>
        do { origin = .success(try await masterOrigin(job)) } catch { origin = .failure(error) }
        Files.removeTree(folder)
        var shipper: LogShipper?
        do {
            try makeDirectories(results)
            guard let template = configuration.commands[job.buildType] else {
                throw BuildProcess.Failure(description: "no command configured for build type \(job.buildType)")
            }
            var values = [
                "build_id": "\(job.buildID)", "attempt": "\(job.attempt)", "build_type": job.buildType,
                "source": job.sourceName, "version": job.sourceVersion, "distribution": job.distribution,
                "series": job.series, "arch": job.archTag, "processor": job.processor, "results": results,
                "dsc": job.sourceFiles.first { $0.name.hasSuffix(".dsc") }?.name ?? "",
                "chroot": "", "build_user": configuration.buildUser ?? "",
            ]
            for file in job.sourceFiles {
                try await fetchSource(job, file, from: try origin.get(), into: folder, credential: credential)
            }
            if let chroot = job.chroot { values["chroot"] = try await ensureChroot(chroot, from: try origin.get()) }
            for (key, value) in try Self.archiveValues(job, folder: folder) { values[key] = value }
            let command = try CommandTemplate.render(template, values: values)
            // A privileged command (one that makes a root per build) starts as root and drops to the build
            // user itself; any other runs as the build user from the start.
            let privileged = configuration.privilegedCommands.contains(job.buildType)
            let user = privileged ? nil : try buildUser()
            if let user { try Files.changeOwner(folder, uid: user.uid, gid: user.gid) }
            let process = try BuildProcess(
                command: command, directory: folder,
                environment: Dictionary(uniqueKeysWithValues: values.map { ("BUILDD_" + $0.key.uppercased(), $0.value) }),
                logPath: logPath, runAs: user, isolated: isolated && !privileged)
            let abortedEarly = box.state.withLock { state -> Bool in
                state.current?.process = process
                return state.current?.aborted ?? false
            }
            if abortedEarly {
                process.signalGroup(SIGTERM)
                scheduleKill(process)
            }
            stateFile.save(PersistedBuild(job: job, finished: nil, pid: process.pid))
            metadata["pid"] = "\(process.pid)"
            logger.info("build started", metadata: metadata)
            let limits = Task { await self.enforceLimits(process) }
            // The log goes to the masters as it grows (followed live there), from the master the job came from.
            shipper = liveLog(job, origin: try origin.get(), path: logPath, key: credential.key)
            let shipping = shipper.map { shipper in Task { await shipper.run(every: Self.logInterval) } }
            let termination = await process.wait()
            limits.cancel()
            shipping?.cancel()
            await shipping?.value
            // Nothing a build started outlives it, on success too: its PID namespace went with its shell, and
            // its process group goes now.
            process.signalGroup(SIGKILL)
            let (aborted, stopping, limit) = box.state.withLock {
                ($0.current?.aborted ?? false, $0.stopping, $0.current?.limitExceeded)
            }
            if let limit {
                result = .packageFail
                message = limit
                appendToLog(logPath, "\nbuildd-agent: \(limit)\n")
            } else if aborted {
                result = stopping ? .givenBack : .aborted
                message = stopping ? "agent shut down" : "aborted by the master"
            } else {
                result = termination.result
                message = "build command ended with \(termination)"
                // A dependency wait names what is missing, read from apt's account in the log (as
                // launchpad-buildd reads sbuild's); the master records it on the build.
                if result == .depFail, let missing = DebianControl.unmetBuildDependencies(
                    inLog: BuildProcess.tail(of: logPath, bytes: 64 * 1024)) {
                    message = "missing dependencies: \(missing)"
                }
                // A build that failed with no room left in the work folder failed for the machine (the core's
                // rule): BUILDERFAIL, so it is retried elsewhere and not blamed on the package.
                if let space = Files.space(at: configuration.workDirectory) {
                    let judged = result.givenWorkFolder(freeBytes: space.free, totalBytes: space.total)
                    if judged != result {
                        let why = "the work folder \(configuration.workDirectory) is full (\(space.free) of \(space.total) bytes free)"
                        logger.error("build failed on a full disk: the machine's failure, not the package's",
                                     metadata: metadata.merging(["build.result": "\(result.rawValue)", "reason": "\(why)"]) { $1 })
                        appendToLog(logPath, "\nbuildd-agent: \(why): \(judged.rawValue), not \(result.rawValue)\n")
                        result = judged
                        message = "\(why); build command ended with \(termination)"
                    }
                }
            }
        } catch {
            message = "\(error)"
            appendToLog(logPath, "buildd-agent: \(error)\n")
        }
        logger.info("build ended", metadata: metadata.merging(["build.result": "\(result.rawValue)"]) { $1 })

        var uploaded: [FileDigest] = []
        var log: FileDigest?
        do {
            // Only regular files directly in a real results folder: a link (to the agent's secrets, say) is
            // refused and said in the log, never followed.
            let (files, refused) = Files.resultFiles(in: results)
            for entry in refused { appendToLog(logPath, "buildd-agent: refused \(entry): not a regular file in the results folder\n") }
            // Each file goes first to the master that took the one before: a master that could not (its
            // database cut off, say) is not asked again for every file.
            var target = try origin.get()
            for name in files {
                guard Naming.isValidFileName(name) else {
                    throw BuildProcess.Failure(description: "result file name not allowed: \(name)")
                }
                let (file, took) = try await upload(job, to: target, path: results + "/" + name, name: name,
                                                    kind: "result", credential: credential)
                uploaded.append(file)
                target = MasterOrigin(master: took, resource: target.resource)
            }
            if access(logPath, F_OK) != 0 { appendToLog(logPath, "") }
            // What was appended live is stored once its digest is checked; sent whole only when that fails.
            if let shipper, let stored = await shipper.finish(name: logName) {
                log = stored
            } else {
                log = try await upload(job, to: target, path: logPath, name: logName, kind: "log",
                                       credential: credential).file
            }
        } catch {
            logger.warning("upload failed", metadata: metadata.merging(["error": "\(error)"]) { $1 })
            if result == .ok || result == .packageFail || result == .depFail || result == .chrootFail {
                result = .builderFail
            }
            message = "upload failed: \(error)"
            uploaded = []
        }
        let report = PendingFinished(result: result, files: uploaded, log: log, message: message)
        stateFile.save(PersistedBuild(job: job, finished: report))
        await deliverFinished(job, report)
        if !configuration.keepWorkDirectory {
            Files.removeTree(folder)
            unlink(logPath)
        }
        await buildDone()
    }

    /// The build was reported: forget it on disk and in memory, then take the next job or stop.
    private func buildDone() async {
        stateFile.remove()
        let oneShot = self.oneShot
        let stopping = box.state.withLock { state -> Bool in
            state.current = nil
            if oneShot { state.stopping = true }
            return state.stopping
        }
        if stopping {
            if oneShot { logger.info("one-shot: the build was reported; stopping") }
            await client.shutdown()
        } else {
            await startConsumingJobs()
        }
    }

    /// The process groups of processes left from a build of this agent: their environment names the build's
    /// folder (`BUILDD_WORKDIR`), which is this agent's own (another agent on the machine, or another farm's
    /// build with the same id and attempt, has another). Never this agent's own group.
    static func orphanedGroups(workFolder: String) -> Set<pid_t> {
        var groups: Set<pid_t> = []
        let marker = "BUILDD_WORKDIR=\(workFolder)"
        for entry in Files.entries(in: "/proc") {
            guard let pid = pid_t(entry), pid > 1, pid != getpid(),
                  let environment = AgentConfiguration.readFile("/proc/\(pid)/environ"),
                  environment.split(separator: "\0").contains(where: { $0 == marker }) else { continue }
            let group = getpgid(pid)
            if group > 1 && group != getpgrp() { groups.insert(group) }
        }
        return groups
    }

    /// The trust for the masters' certificates: `[master] ca_file`'s, made once, or nil for the system's store.
    private func trust() throws -> TLSTrust? {
        guard let caFile = configuration.caFile else { return nil }
        return try trustBox.withLock { box in
            if let made = box { return made }
            let made = try TLSTrust(caFile: caFile)
            box = made
            return made
        }
    }

    /// The unprivileged user builds run as, when the agent runs as root and one is configured.
    private func buildUser() throws -> (uid: uid_t, gid: gid_t)? { try Self.buildUser(configuration) }

    static func buildUser(_ configuration: AgentConfiguration) throws -> (uid: uid_t, gid: gid_t)? {
        guard let name = configuration.buildUser, geteuid() == 0 else { return nil }
        guard let entry = getpwnam(name) else {
            throw BuildProcess.Failure(description: "build_user \(name) does not exist")
        }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    /// Stops a build that runs past the timeout or whose log grows past the cap.
    private func enforceLimits(_ process: BuildProcess) async {
        let clock = ContinuousClock()
        let started = clock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            var exceeded: String?
            if let timeout = configuration.buildTimeoutSeconds, clock.now - started > .seconds(timeout) {
                exceeded = "build timed out after \(timeout) s"
            } else {
                var info = stat()
                if stat(process.logPath, &info) == 0, Int64(info.st_size) > configuration.maxLogBytes {
                    exceeded = "build log exceeded \(configuration.maxLogBytes) bytes"
                }
            }
            guard let exceeded else { continue }
            logger.warning("stopping build: \(exceeded)")
            box.state.withLock { $0.current?.limitExceeded = exceeded }
            process.signalGroup(SIGTERM)
            scheduleKill(process)
            return
        }
    }

    /// A build this agent held when it last stopped: report it before taking new work. A result that
    /// was ready is delivered as it was; a build that was running is given back.
    private func recover(_ persisted: PersistedBuild) async {
        let job = persisted.job
        if persisted.finished == nil {
            // The build command outlived the agent: stop its whole process group before giving it back. The
            // groups are found by the build's environment, so a command started just before the agent died
            // (its pid not saved yet) is found too.
            let folder = "\(configuration.workDirectory)/build-\(job.buildID)-\(job.attempt)"
            for group in Self.orphanedGroups(workFolder: folder) {
                logger.warning("stopping the orphaned build command", metadata: ["pgid": "\(group)"])
                kill(-group, SIGKILL)
            }
        }
        let report = persisted.finished ?? PendingFinished(
            result: .givenBack, files: [], log: nil,
            message: "the agent restarted while the build ran; given back")
        logger.warning("reporting a build from before the restart", metadata: [
            "build.id": "\(job.buildID)", "build.attempt": "\(job.attempt)", "build.result": "\(report.result.rawValue)"])
        await deliverFinished(job, report)
        Files.removeTree("\(configuration.workDirectory)/build-\(job.buildID)-\(job.attempt)")
        await buildDone()
    }

    private func appendToLog(_ path: String, _ text: String) {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { return }
        _ = text.utf8CString.withUnsafeBufferPointer { write(descriptor, $0.baseAddress, $0.count - 1) }
        close(descriptor)
    }

    /// Fetches one source file from the master (the one that dispatched, then the others) and checks
    /// its size and SHA-256 before the build may use it.
    private func fetchSource(_ job: JobMessage, _ file: FileDigest, from origin: MasterOrigin,
                             into folder: String, credential: UploadCredential) async throws {
        guard Naming.isValidFileName(file.name) else {
            throw BuildProcess.Failure(description: "cannot fetch source \(file.name): not a plain file name")
        }
        guard origin.resource.hasSuffix("/files/") else {
            throw BuildProcess.Failure(description: "upload URL \(job.uploadURL) does not end in /files/")
        }
        let resource = String(origin.resource.dropLast("files/".count)) + "sources/" + file.name
        try await credential.retryingUntilAccepted {
            try await download(file, what: "source \(file.name)", resource: resource, from: origin,
                               headers: ["Authorization": "Bearer \(credential.key)"], to: folder + "/" + file.name)
        }
    }

    /// Downloads `file` from the master the job came from, then from the other configured masters, to `path`,
    /// and checks its size and SHA-256. A copy that fails the check is removed and fails the build; it is
    /// not tried elsewhere (the masters share one store). `what` names the file in errors.
    private func download(_ file: FileDigest, what: String, resource: String, from origin: MasterOrigin,
                          headers: [String: String] = [:], to path: String, timeoutSeconds: Int = 300) async throws {
        var lastError = "unknown"
        var refused = 0
        let masters = [origin.master] + configuration.masterURLs.filter({ $0 != origin.master })
        for master in masters {
            do {
                let url = master + resource
                let trust = try self.trust()
                let got = try await runBlocking(name: "fetch") {
                    try SimpleHTTPClient.download(url: url, headers: headers, to: path, maxBytes: file.size,
                                                  timeoutSeconds: timeoutSeconds, trust: trust)
                }
                guard got.status == 200 else {
                    lastError = "HTTP \(got.status) from \(master)"
                    if got.status == 403 { refused += 1 }
                    continue
                }
                guard got.sha256 == file.sha256, got.size == file.size else {
                    unlink(path)
                    throw BuildProcess.Failure(description: "\(what) failed its sha256 check "
                                               + "(got \(got.sha256), \(got.size) bytes)")
                }
                return
            } catch let failure as BuildProcess.Failure {
                throw failure
            } catch {
                lastError = "\(master): \(error)"
            }
        }
        unlink(path)
        // A refusal (403) while no master served it: the accept may not be applied yet (retried); one master
        // being down or stepped down (503) does not make that final.
        if refused > 0 { throw UploadCredential.Refused(description: "cannot fetch \(what): \(lastError)") }
        throw BuildProcess.Failure(description: "cannot fetch \(what): \(lastError)")
    }

    /// The job's chroot tarball in the agent's cache (`workdir/chroots`), fetched from the masters and
    /// checked against its SHA-256 when it is not there yet, as launchpad-buildd's `ensurepresent` does.
    /// The cache keeps the `chroot_cache` most recently used tarballs. A chroot that cannot be fetched
    /// is the machine's (or the network's) failure, not the package's: BUILDERFAIL.
    private func ensureChroot(_ chroot: FileDigest, from origin: MasterOrigin) async throws -> String {
        guard Naming.isValidFileName(chroot.name) else {
            throw BuildProcess.Failure(description: "chroot name not allowed: \(chroot.name)")
        }
        let cache = configuration.workDirectory + "/chroots"
        try makeDirectories(cache)
        let path = "\(cache)/\(chroot.sha256)-\(chroot.name)"
        var info = stat()
        if stat(path, &info) == 0, Int64(info.st_size) == chroot.size {
            utimes(path, nil)
            return path
        }
        logger.info("fetching chroot", metadata: ["chroot": "\(chroot.name)", "chroot.sha256": "\(chroot.sha256)",
                                                  "chroot.size": "\(chroot.size)"])
        let partial = path + ".part"
        try await download(chroot, what: "chroot \(chroot.name)", resource: "/v1/chroots/\(chroot.sha256)",
                           from: origin, to: partial, timeoutSeconds: 600)
        guard rename(partial, path) == 0 else {
            throw BuildProcess.Failure(description: "cannot store chroot \(path): \(String(cString: strerror(errno)))")
        }
        Self.pruneChroots(in: cache, keeping: configuration.chrootCache)
        return path
    }

    /// Removes all but the `keeping` most recently used chroot tarballs of the cache, and the trees build
    /// commands unpacked from the ones that went (`<tarball>.root`, `<tarball>.root.part`).
    static func pruneChroots(in cache: String, keeping: Int) {
        let files = Files.regularFiles(in: cache).map { name -> (String, Int) in
            var info = stat()
            _ = stat(cache + "/" + name, &info)
            return (name, info.st_mtim.tv_sec)
        }.sorted { $0.1 > $1.1 }
        for (name, _) in files.dropFirst(keeping) { unlink(cache + "/" + name) }
        let kept = Set(files.prefix(keeping).map(\.0))
        for name in Files.entries(in: cache) {
            for suffix in [".root", ".root.part"] where name.hasSuffix(suffix) {
                if !kept.contains(String(name.dropLast(suffix.count))) { Files.removeTree(cache + "/" + name) }
            }
        }
    }

    /// How often a running build's log growth is sent to the masters.
    static let logInterval = Duration.seconds(1)

    /// The sender of a build's live log: to the job's master first, then the other configured masters.
    private func liveLog(_ job: JobMessage, origin: MasterOrigin, path: String, key: String) -> LogShipper {
        LogShipper(path: path, resource: "/v1/builds/\(job.buildID)/attempts/\(job.attempt)/log",
                   masters: [origin.master] + configuration.masterURLs.filter { $0 != origin.master }, key: key,
                   logger: logger) { [self] method, url, headers, body in
            let trust = try self.trust()
            return try await runBlocking(name: "log") {
                try SimpleHTTPClient.send(method: method, url: url, headers: headers, body: .bytes(body),
                                          timeoutSeconds: 30, trust: trust)
            }
        }
    }

    /// The configured master the job came from (compared by scheme, host as resolved here, port and path).
    private func masterOrigin(_ job: JobMessage) async throws -> MasterOrigin {
        let masters = configuration.masterURLs, uploadURL = job.uploadURL
        let origin = try await runBlocking(name: "resolve") {
            MasterOrigin.find(uploadURL: uploadURL, masters: masters)
        }
        guard let origin else {
            throw BuildProcess.Failure(description: "upload URL \(uploadURL) is not on a configured master "
                                       + "(\(masters.joined(separator: ", "))): compared by scheme, host "
                                       + "(as this machine resolves it) and port")
        }
        return origin
    }

    /// Uploads one file with its digest, retrying transient failures, first to `origin` (the master the job
    /// came from, or the one that took the build's last file) and then to the other configured masters (which
    /// share the artifact store). Returns the file and the master that took it.
    private func upload(_ job: JobMessage, to origin: MasterOrigin, path: String, name: String,
                        kind: String, credential: UploadCredential) async throws -> (file: FileDigest, master: String) {
        try await credential.retryingUntilAccepted {
            try await self.upload(job, to: origin, path: path, name: name, kind: kind, key: credential.key)
        }
    }

    private func upload(_ job: JobMessage, to origin: MasterOrigin, path: String, name: String,
                        kind: String, key: String) async throws -> (file: FileDigest, master: String) {
        let resource = origin.resource + name + "?kind=\(kind)"
        let masters = [origin.master] + configuration.masterURLs.filter { $0 != origin.master }
        let (sha256, size) = try Files.digest(path)
        var lastError = "unknown"
        for attempt in 1...4 {
            for master in masters {
                do {
                    let url = master + resource
                    let trust = try self.trust()
                    let response = try await runBlocking(name: "upload") {
                        try SimpleHTTPClient.send(method: "PUT", url: url, headers: [
                            "Authorization": "Bearer \(key)", "X-Checksum-Sha256": sha256,
                            "Content-Type": "application/octet-stream",
                        ], body: .file(path: path), timeoutSeconds: 300, trust: trust)
                    }
                    if response.status == 201 { return (FileDigest(name: name, sha256: sha256, size: size), master) }
                    lastError = "HTTP \(response.status) from \(master): \(response.text.prefix(200))"
                    // Not (yet) this agent's attempt: the caller retries while the master may not have applied
                    // its `accepted` yet.
                    if response.status == 403 { throw UploadCredential.Refused(description: "\(name): \(lastError)") }
                    // Refused (stale attempt, wrong digest, name taken): another try will not help.
                    if (400..<500).contains(response.status) {
                        throw BuildProcess.Failure(description: "\(name): \(lastError)")
                    }
                } catch let failure as BuildProcess.Failure {
                    throw failure
                } catch let refused as UploadCredential.Refused {
                    throw refused
                } catch {
                    lastError = "\(master): \(error)"
                }
            }
            if attempt < 4 { try? await Task.sleep(for: .seconds(1 << (attempt - 1))) }
        }
        throw BuildProcess.Failure(description: "\(name): \(lastError)")
    }

    /// Sends `finished` until the broker confirms it; the build stays this agent's until then.
    private func deliverFinished(_ job: JobMessage, _ report: PendingFinished) async {
        var backoff = Duration.milliseconds(200)
        while true {
            do {
                try await send(.finished, state: .idle, job: job, result: report.result, files: report.files,
                               log: report.log, message: report.message) { state in state.current?.phase = .reported }
                logger.info("build reported", metadata: ["build.id": "\(job.buildID)",
                                                         "build.result": "\(report.result.rawValue)"])
                return
            } catch {
                logger.warning("finished not delivered yet, retrying", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(5))
            }
        }
    }

    // MARK: Control

    private func handleControl(_ delivery: Delivery) async {
        defer { Task { try? await client.ack(delivery) } }
        guard let control = try? WireCodec.decodeControl(delivery.body) else {
            logger.warning("unreadable control message dropped")
            return
        }
        switch control.command {
        case .abort:
            let process = box.state.withLock { state -> BuildProcess?? in
                guard var current = state.current, current.job.buildID == control.buildID,
                      current.job.attempt == control.attempt else { return nil }
                current.aborted = true
                state.current = current
                return .some(current.process)
            }
            guard let process else {
                logger.info("abort for a build not running here ignored", metadata: ["build.id": "\(control.buildID ?? 0)"])
                return
            }
            logger.info("aborting build", metadata: ["build.id": "\(control.buildID ?? 0)",
                                                     "reason": "\(control.reason ?? "")"])
            if let process {
                process.signalGroup(SIGTERM)
                scheduleKill(process)
            }
        case .clean:
            guard let attempt = control.attempt, attempt > 0 else {
                logger.warning("clean without a reset attempt ignored")
                return
            }
            Task { await self.runReset(attempt: Int(attempt)) }
        case .shutdown:
            Task { await self.shutdown() }
        }
    }

    /// The job's archive settings for its command (`BUILDD_SUITE`, `BUILDD_COMPONENT`, `BUILDD_ARCHIVE_PRIVATE`,
    /// `BUILDD_ARCH_INDEP`, `BUILDD_BUILD_DEBUG_SYMBOLS`) and, when it carries apt sources, `BUILDD_APT_SOURCES`:
    /// a sources.list in the build's folder whose lines name each archive's key as
    /// `/buildd/apt-keys/ARCHIVE.asc` (where a root-making command such as `buildd-binarypackage` puts the
    /// files of `BUILDD_APT_KEYS`).
    static func archiveValues(_ job: JobMessage, folder: String) throws -> [String: String] {
        var values = ["suite": job.suite, "pocket": job.pocket ?? "release", "component": job.component ?? "main",
                      "archive": job.archive ?? "", "archive_private": job.archivePrivate == true ? "1" : "0",
                      "arch_indep": job.archIndep == true ? "1" : "0",
                      "build_debug_symbols": job.buildDebugSymbols == true ? "1" : "0",
                      "apt_sources": "", "apt_keys": ""]
        guard let sources = job.aptSources, !sources.isEmpty else { return values }
        let keys = folder + "/apt-keys"
        try makeDirectories(keys)
        var lines: [String] = []
        for source in sources {
            var line = source.line
            if let key = source.key {
                try key.write(toFile: "\(keys)/\(source.archive).asc", atomically: false, encoding: .utf8)
                line = "deb [signed-by=/buildd/apt-keys/\(source.archive).asc] " + line.dropFirst("deb ".count)
            }
            lines.append(line)
        }
        try (lines.joined(separator: "\n") + "\n").write(toFile: folder + "/apt-sources.list", atomically: false, encoding: .utf8)
        values["apt_sources"] = folder + "/apt-sources.list"
        values["apt_keys"] = keys
        return values
    }

    // MARK: Reset

    /// Runs `reset_command` for the reset `attempt` the master asked for, while no build runs here, and
    /// reports how it went (a `reset` event); the master's deadline judges one that never ends.
    func runReset(attempt: Int) async {
        let busy = box.state.withLock { state -> Bool in
            if state.current != nil || state.resetting { return true }
            state.resetting = true
            return false
        }
        var ok = false
        var why: String?
        if busy {
            why = "the agent is busy (a build or another reset)"
        } else if let command = configuration.resetCommand {
            defer { box.state.withLock { $0.resetting = false } }
            let log = configuration.workDirectory + "/reset.log"
            logger.info("reset started", metadata: ["reset.attempt": "\(attempt)"])
            do {
                let process = try BuildProcess(command: command, directory: configuration.workDirectory,
                                               environment: ["BUILDD_BUILDER": configuration.name,
                                                             "BUILDD_RESET_ATTEMPT": "\(attempt)"], logPath: log)
                switch await process.wait() {
                case .exited(0): ok = true
                case .exited(let code): why = "reset_command ended with exit status \(code)"
                case .signalled(let signal): why = "reset_command was killed by signal \(signal)"
                }
            } catch {
                why = "reset_command could not start: \(error)"
            }
            if !ok, let tail = try? String(contentsOfFile: log, encoding: .utf8), !tail.isEmpty {
                why = (why ?? "") + ": " + String(tail.suffix(300)).trimmed(" \n\t")
            }
            unlink(log)
        } else {
            box.state.withLock { $0.resetting = false }
            why = "this agent has no reset_command"
        }
        logger.log(level: ok ? .info : .warning, "reset ran", metadata: ["reset.attempt": "\(attempt)", "ok": "\(ok)",
                                                                          "error": "\(why ?? "")"])
        do {
            try await publishEvent(.reset, message: why, resetAttempt: attempt, resetOK: ok) { _ in (.idle, nil, nil) }
        } catch {
            logger.warning("reset not reported; the master's deadline decides", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Events

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(configuration.heartbeatSeconds))
            if box.state.withLock({ $0.stopping && $0.current == nil }) { return }
            guard client.currentGeneration != nil else { continue }
            await sendStatus(.heartbeat)
        }
    }

    /// Sends hello or heartbeat. What it says is read when the event is published, in sequence order
    /// with `accepted` and `finished`.
    private func sendStatus(_ kind: AgentEventKind) async {
        do {
            try await publishEvent(kind) { box in
                let current = box.state.withLock { $0.current }
                guard let current, current.phase == .running else { return (.idle, nil, nil) }
                return (current.aborted ? .aborting : .building, current.job,
                        current.process.map { BuildProcess.tail(of: $0.logPath) })
            }
        } catch {
            logger.warning("\(kind.rawValue) not sent", metadata: ["error": "\(error)"])
        }
    }

    /// Publishes `accepted` or `finished` for a job; `update` changes the agent's state at the moment the
    /// event gets its sequence number.
    func send(_ kind: AgentEventKind, state: AgentState, job: JobMessage, result: BuilderResult? = nil,
              files: [FileDigest]? = nil, log: FileDigest? = nil, message: String? = nil,
              uploadKeySHA256: String? = nil, update: @escaping @Sendable (inout State) -> Void) async throws {
        try await publishEvent(kind, result: result, files: files, log: log, message: message,
                               uploadKeySHA256: uploadKeySHA256) { box in
            box.state.withLock { update(&$0) }
            return (state, job, nil)
        }
    }

    /// Publishes an event; its sequence number and the state it reports (`snapshot`) are taken on the
    /// connection thread, in publish order.
    private func publishEvent(_ kind: AgentEventKind, result: BuilderResult? = nil, files: [FileDigest]? = nil,
                              log: FileDigest? = nil, message: String? = nil, uploadKeySHA256: String? = nil,
                              resetAttempt: Int? = nil, resetOK: Bool? = nil,
                              snapshot: @escaping @Sendable (StateBox) -> (AgentState, JobMessage?, String?)) async throws {
        let name = configuration.name
        let session = self.session
        let processors = configuration.processors
        let user = configuration.brokerUser
        let box = self.box
        try await client.publish(exchange: BrokerTopology.statusExchange, mandatory: true) {
            let seq = box.seq.withLock { value -> Int64 in
                value += 1
                return value
            }
            let (state, job, logTail) = snapshot(box)
            var event = AgentEvent(kind: kind, builder: name, session: session, seq: seq, state: state,
                                   buildID: job?.buildID, attempt: job?.attempt, logTail: logTail, result: result,
                                   files: files, log: log, processors: kind == .hello ? processors : nil,
                                   message: message.map { String($0.prefix(1000)) }, uploadKeySHA256: uploadKeySHA256)
            event.resetAttempt = resetAttempt
            event.resetOK = resetOK
            if kind == .hello {
                event.release = BuilddRelease.version
                event.capabilities = BuilddRelease.agentCapabilities
            }
            return (BrokerTopology.statusRoutingKey(builder: name, event: kind.rawValue), WireCodec.encode(event),
                    MessageProperties(userID: user, type: kind.rawValue,
                                      headers: [BrokerTopology.builderHeader: .string(name)]))
        }
    }
}
