import BuilddShared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A build command running in its own process group, its output going to a log file.
public final class BuildProcess: Sendable {
    public let pid: pid_t
    public let logPath: String

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// How the process ended.
    public enum Termination: Equatable, Sendable {
        case exited(Int32)
        case signalled(Int32)

        /// The builder result this termination maps to (buildd's convention, ``BuilderResult/fromExitStatus``; signals are BUILDERFAIL).
        public var result: BuilderResult {
            switch self {
            case .exited(let code): return BuilderResult.fromExitStatus(code)
            case .signalled: return .builderFail
            }
        }
    }

    /// The command line that runs a build's shell in a PID namespace of its own (util-linux's `unshare`,
    /// in a user namespace, which needs no privilege): the shell is the namespace's first process, and
    /// when it ends the kernel kills every other process of the namespace, whatever session, group or
    /// environment it gave itself. Nothing a build started outlives it, on success too.
    public static let pidNamespace = ["/usr/bin/unshare", "--map-current-user", "--pid", "--fork", "--kill-child", "--"]

    /// Starts `/bin/sh -c command` in `directory` with `environment` added to the agent's own.
    /// - Parameter runAs: when set (the agent runs as root), the command runs as this user and group,
    ///   with no supplementary groups, through util-linux's `setpriv`.
    /// - Parameter isolated: in a PID namespace of its own (``pidNamespace``); off only for privileged
    ///   commands, which make their own, and where this kernel allows no user namespaces.
    public init(command: String, directory: String, environment: [String: String], logPath: String,
                runAs user: (uid: uid_t, gid: gid_t)? = nil, isolated: Bool = false) throws {
        self.logPath = logPath
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        // A build inherits no descriptor of the agent's but its log: not the broker's socket, not a file.
        try Self.closeOtherDescriptors(&fileActions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged: [String: String] = [:]
        var index = 0
        while let entry = environ[index] {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                let key = String(text[..<equals])
                // The agent's own secrets never reach a build.
                if !key.hasPrefix("BUILDD_AGENT_") { merged[key] = String(text[text.index(after: equals)...]) }
            }
            index += 1
        }
        merged.merge(environment) { _, new in new }
        merged["BUILDD_WORKDIR"] = directory
        // glibc's posix_spawn_file_actions_addchdir_np is not visible to Swift: the shell changes folder.
        let script = "cd -- \"$BUILDD_WORKDIR\" || exit 127\n" + command
        let arguments = Self.commandLine(["/bin/sh", "-c", script], runAs: user, isolated: isolated)
        if user != nil { merged["HOME"] = directory }
        var child = pid_t()
        let rc = Self.withCStrings(arguments) { argv in
            Self.withCStrings(merged.map { "\($0.key)=\($0.value)" }) { envp in
                posix_spawn(&child, arguments[0], &fileActions, &attributes, argv, envp)
            }
        }
        guard rc == 0 else { throw Failure(description: "cannot start build command: \(String(cString: strerror(rc)))") }
        pid = child
    }

    /// Whether builds can be given a PID namespace here (as `user`, or as the agent): user namespaces may be
    /// off in the kernel or refused by its security module.
    public static func canIsolate(as user: (uid: uid_t, gid: gid_t)?) -> Bool {
        let arguments = commandLine(["/bin/true"], runAs: user, isolated: true)
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 2, "/dev/null", O_WRONLY, 0)
        var child = pid_t()
        let rc = withCStrings(arguments) { argv in
            withCStrings(["PATH=/usr/bin:/bin"]) { envp in posix_spawn(&child, arguments[0], &fileActions, nil, argv, envp) }
        }
        guard rc == 0 else { return false }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 { if errno != EINTR { return false } }
        return status == 0
    }

    /// The command line that runs `command` as `user` (util-linux's `setpriv`: its uid and gid, no
    /// supplementary groups) and, when `isolated`, in a PID namespace of its own (``pidNamespace``).
    static func commandLine(_ command: [String], runAs user: (uid: uid_t, gid: gid_t)?, isolated: Bool) -> [String] {
        let inner = isolated ? pidNamespace + command : command
        guard let user else { return inner }
        return ["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"] + inner
    }

    /// Runs `body` with C copies of `strings`, NULL-terminated as `argv` and `envp` are.
    static func withCStrings<T>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> T) -> T {
        let pointers = strings.map { strdup($0) } + [nil]
        defer { pointers.forEach { free($0) } }
        return body(pointers)
    }

    /// Makes a spawn close every descriptor from 3 up: glibc's `posix_spawn_file_actions_addclosefrom_np`
    /// (2.34 and later; looked up at run time, since Swift does not see its declaration), else every
    /// descriptor of the agent is marked close-on-exec first.
    static func closeOtherDescriptors(_ actions: inout posix_spawn_file_actions_t) throws {
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
        if let symbol = Self.closeFromSymbol {
            let closeFrom = unsafeBitCast(symbol, to: CloseFrom.self)
            guard closeFrom(&actions, 3) == 0 else {
                throw Failure(description: "cannot keep the agent's descriptors from the build: \(String(cString: strerror(errno)))")
            }
            return
        }
        for entry in Files.entries(in: "/proc/self/fd") {
            guard let descriptor = Int32(entry), descriptor > 2 else { continue }
            let flags = fcntl(descriptor, F_GETFD)
            if flags >= 0 { _ = fcntl(descriptor, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    nonisolated(unsafe) static let closeFromSymbol: UnsafeMutableRawPointer? =
        dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np")

    /// Waits for the process on a thread of its own.
    public func wait() async -> Termination {
        let pid = self.pid
        return (try? await runBlocking(name: "waitpid") { () -> Termination in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 {
                if errno != EINTR { return .signalled(SIGKILL) }
            }
            if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
            return .signalled(status & 0x7f)
        }) ?? .signalled(SIGKILL)
    }

    /// Sends a signal to the whole process group.
    public func signalGroup(_ signal: Int32) {
        kill(-pid, signal)
    }

    /// The last `bytes` of the log (lossy UTF-8).
    public static func tail(of path: String, bytes: Int = 2048) -> String {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { return "" }
        defer { close(descriptor) }
        let size = lseek(descriptor, 0, SEEK_END)
        let start = max(0, Int(size) - bytes)
        var buffer = [UInt8](repeating: 0, count: Int(size) - start)
        let count = pread(descriptor, &buffer, buffer.count, off_t(start))
        guard count > 0 else { return "" }
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }
}

/// File helpers for the agent's work folders.
enum Files {
    /// The bytes left to an unprivileged writer on `path`'s filesystem, and its size; nil when it cannot be read.
    static func space(at path: String) -> (free: Int64, total: Int64)? {
        var stats = statvfs()
        guard statvfs(path, &stats) == 0 else { return nil }
        return (Int64(stats.f_bavail) * Int64(stats.f_frsize), Int64(stats.f_blocks) * Int64(stats.f_frsize))
    }

    /// Removes a tree (no symlinks followed).
    static func removeTree(_ path: String) {
        guard let directory = opendir(path) else {
            unlink(path)
            return
        }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            let child = path + "/" + name
            var info = stat()
            if lstat(child, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR {
                removeTree(child)
            } else {
                unlink(child)
            }
        }
        closedir(directory)
        rmdir(path)
    }

    /// Gives a folder and everything directly and indirectly in it to a user (no symlinks followed).
    static func changeOwner(_ path: String, uid: uid_t, gid: gid_t) throws {
        guard lchown(path, uid, gid) == 0 else {
            throw BuildProcess.Failure(description: "cannot chown \(path): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, let directory = opendir(path) else { return }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            try changeOwner(path + "/" + name, uid: uid, gid: gid)
        }
    }

    /// Every name directly in a folder but `.` and `..`, sorted.
    static func entries(in path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// The result files of a build: regular files directly in `path`, sorted, and the entries refused
    /// (links, folders, devices). When `path` itself is not a real folder (a link to one), nothing is taken
    /// and the folder is refused.
    static func resultFiles(in path: String) -> (files: [String], refused: [String]) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return ([], []) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return ([], ["the results folder itself"]) }
        var files: [String] = [], refused: [String] = []
        for name in entries(in: path) {
            var entry = stat()
            if lstat(path + "/" + name, &entry) == 0, (entry.st_mode & S_IFMT) == S_IFREG { files.append(name) } else {
                refused.append(name)
            }
        }
        return (files, refused)
    }

    /// Regular files directly in a folder, sorted.
    static func regularFiles(in path: String) -> [String] {
        entries(in: path).filter { name in
            var info = stat()
            return lstat(path + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        }
    }

    /// SHA-256 and size of a file.
    static func digest(_ path: String) throws -> (sha256: String, size: Int64) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { throw BuildProcess.Failure(description: "cannot read \(path)") }
        defer { close(descriptor) }
        var hasher = SHA256()
        var size: Int64 = 0
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = read(descriptor, &buffer, buffer.count)
            if count < 0 { throw BuildProcess.Failure(description: "cannot read \(path)") }
            if count == 0 { break }
            hasher.update(buffer[0..<count])
            size += Int64(count)
        }
        return (hasher.finalizeHex(), size)
    }
}
