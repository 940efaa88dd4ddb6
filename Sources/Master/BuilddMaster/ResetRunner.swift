#if canImport(Glibc)
import Glibc
#endif
import BuilddShared
import Foundation
import Logging

/// Runs the builder resets a pass started (``BuilddStore/resetPass()``) and reports how each went
/// (``BuilddStore/resetRan(builder:attempt:result:)``); the core decides what that makes of the builder.
///
/// A command runs as `/bin/sh -c COMMAND` in a process group of its own, with only `PATH`, `LANG`,
/// `BUILDD_BUILDER` and `BUILDD_RESET_ATTEMPT` in its environment (none of the master's settings or
/// secrets), and is killed with its whole group at the reset's deadline. A URL gets a POST with a JSON body
/// naming the builder and the attempt; any 2xx answer is success.
public struct ResetRunner: Sendable {
    let store: BuilddStore
    let logger: Logger
    /// Sends `clean` to an agent that resets itself; false when it could not be sent.
    let sendClean: @Sendable (_ builder: String, _ attempt: Int) async -> Bool

    public init(store: BuilddStore, logger: Logger,
                sendClean: @escaping @Sendable (_ builder: String, _ attempt: Int) async -> Bool = { _, _ in false }) {
        self.store = store
        self.logger = logger
        self.sendClean = sendClean
    }

    /// Runs one reset to its end (or its deadline) and records the result; returns the builder's new clean
    /// status as the core decided it, or nil when the result could not be recorded (the deadline then
    /// decides).
    @discardableResult
    public func run(_ order: LifecycleCore.ResetOrder, now: Double = Date().timeIntervalSince1970) async -> EventOutcome? {
        let seconds = max(0.5, order.deadline - now)
        let metadata: Logger.Metadata = ["builder.name": "\(order.builder)", "reset.attempt": "\(order.attempt)",
                                         "reset.method": "\(order.plan.method.rawValue)",
                                         "reset.protocol": "\(order.plan.resetProtocol.rawValue)"]
        logger.info("reset started", metadata: metadata)
        let result: BuilderReset.RunResult
        switch order.plan.method {
        case .none:
            return nil
        case .agent:
            // The agent reports how its reset_command went (a `reset` event); only a failure to ask it is
            // decided here.
            if await sendClean(order.builder, order.attempt) { return nil }
            result = .failed("the agent could not be asked to reset (broker unavailable)")
        case .command:
            let command = order.plan.target ?? "false"
            let environment = ["BUILDD_BUILDER": order.builder, "BUILDD_RESET_ATTEMPT": "\(order.attempt)"]
            result = (try? await runBlocking(name: "reset") {
                Self.runCommand(command, environment: environment, timeoutSeconds: seconds)
            }) ?? .failed("the reset command could not be run")
        case .url:
            let url = order.plan.target ?? ""
            let body = Array(#"{"builder":"\#(order.builder)","attempt":\#(order.attempt)}"#.utf8)
            do {
                let response = try await runBlocking(name: "reset") {
                    try SimpleHTTPClient.send(method: "POST", url: url,
                                              headers: ["Content-Type": "application/json", "User-Agent": "buildd-master"],
                                              body: .bytes(body), timeoutSeconds: Int(seconds.rounded(.up)),
                                              maxResponseBytes: 64 * 1024)
                }
                result = (200..<300).contains(response.status)
                    ? .succeeded : .failed("HTTP \(response.status) \(String(response.text.prefix(200)))")
            } catch {
                result = .failed("POST failed: \(error)")
            }
        }
        do {
            let outcome = try await store.resetRan(builder: order.builder, attempt: order.attempt, result: result)
            var done = metadata
            done["outcome"] = "\(outcome)"
            if case .failed(let why) = result {
                done["error"] = "\(why)"
                logger.warning("reset failed", metadata: done)
            } else {
                logger.info("reset ran", metadata: done)
            }
            return outcome
        } catch {
            var failed = metadata
            failed["error"] = "\(error)"
            logger.warning("reset's result not recorded; its deadline decides", metadata: failed)
            return nil
        }
    }

    /// Runs `/bin/sh -c command` to its end or for `timeoutSeconds`, whichever comes first; at the limit its
    /// whole process group is killed. The last lines of its output explain a failure.
    static func runCommand(_ command: String, environment: [String: String], timeoutSeconds: Double) -> BuilderReset.RunResult {
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("buildd-reset-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).log").path
        defer { unlink(output) }
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, output, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setpgroup(&attributes, 0)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))
        var env = environment
        env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["LANG"] = "C.UTF-8"
        let arguments = ["/bin/sh", "-c", command]
        var child = pid_t()
        let rc = withCStrings(arguments) { argv in
            withCStrings(env.map { "\($0.key)=\($0.value)" }) { envp in
                posix_spawn(&child, arguments[0], &fileActions, &attributes, argv, envp)
            }
        }
        guard rc == 0 else { return .failed("cannot start the reset command: \(String(cString: strerror(rc)))") }
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutSeconds * 1000))
        var status: Int32 = 0
        while true {
            let waited = waitpid(child, &status, WNOHANG)
            if waited == child { break }
            if waited < 0 && errno != EINTR { return .failed("waitpid: \(String(cString: strerror(errno)))") }
            if ContinuousClock.now >= deadline {
                kill(-child, SIGKILL)
                while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                return .failed("the reset command ran past its deadline (\(Int(timeoutSeconds)) s) and was killed")
            }
            usleep(50_000)
        }
        // Whatever it left running in its group goes with it.
        kill(-child, SIGKILL)
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        if exited && code == 0 { return .succeeded }
        let tail = (try? String(contentsOfFile: output, encoding: .utf8)).map { String($0.suffix(300)) } ?? ""
        let how = exited ? "exit status \(code)" : "signal \(status & 0x7f)"
        return .failed("the reset command ended with \(how)" + (tail.isEmpty ? "" : ": \(tail.trimmingCharacters(in: .whitespacesAndNewlines))"))
    }

    private static func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { for pointer in pointers { free(pointer) } }
        return body(pointers)
    }
}
