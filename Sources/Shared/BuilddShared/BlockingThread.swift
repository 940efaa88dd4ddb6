#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Starts `body` on a new detached POSIX thread.
///
/// Blocking C calls (librabbitmq, libpq, `waitpid`, socket I/O) must never run on Swift's cooperative
/// pool, which has one thread per core: they run on threads like this one and report back through
/// continuations.
public func startThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
    let box = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, { arg in
        let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    precondition(rc == 0, "pthread_create failed: \(rc)")
    pthread_detach(tid)
}

/// Runs one blocking call on a thread of its own and returns its result to async code.
public func runBlocking<T: Sendable>(
    name: String = "blocking",
    _ body: @escaping @Sendable () throws -> T
) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        startThread(name: name) {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// A queue of closures plus a pipe that wakes the owning thread out of `poll(2)`.
///
/// The owner thread waits with ``wait(timeoutMilliseconds:extraDescriptor:)``, which returns when a
/// job was posted, when `extraDescriptor` (a socket) becomes readable, or on timeout.
public final class Mailbox: Sendable {
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let readFD: Int32
    private let writeFD: Int32

    public init() {
        var fds: [Int32] = [0, 0]
        let rc = pipe(&fds)
        precondition(rc == 0, "pipe() failed: \(errno)")
        readFD = fds[0]
        writeFD = fds[1]
        _ = fcntl(readFD, F_SETFL, fcntl(readFD, F_GETFL) | O_NONBLOCK)
        _ = fcntl(writeFD, F_SETFL, fcntl(writeFD, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    /// Queues a job and wakes the owner thread.
    public func post(_ job: @escaping @Sendable () -> Void) {
        let wasEmpty = jobs.withLock { list -> Bool in
            list.append(job)
            return list.count == 1
        }
        if wasEmpty {
            var byte: UInt8 = 1
            _ = write(writeFD, &byte, 1)
        }
    }

    /// Takes every queued job, in order.
    public func drain() -> [@Sendable () -> Void] {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readFD, &buffer, buffer.count) > 0 {}
        return jobs.withLock { list in
            let taken = list
            list.removeAll(keepingCapacity: true)
            return taken
        }
    }

    /// Whether jobs are waiting.
    public var hasJobs: Bool { jobs.withLock { !$0.isEmpty } }

    /// Blocks until a job is posted, `extraDescriptor` is readable, or the timeout passes.
    /// - Returns: whether `extraDescriptor` is readable (or in error, which a read will report).
    @discardableResult
    public func wait(timeoutMilliseconds: Int32, extraDescriptor: Int32? = nil) -> Bool {
        if hasJobs { return false }
        var fds = [pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)]
        if let extra = extraDescriptor, extra >= 0 {
            fds.append(pollfd(fd: extra, events: Int16(POLLIN), revents: 0))
        }
        let rc = poll(&fds, nfds_t(fds.count), timeoutMilliseconds)
        guard rc > 0, fds.count > 1 else { return false }
        return fds[1].revents != 0
    }
}

/// Errors of ``ConfinedWorker``.
public struct WorkerStoppedError: Error, CustomStringConvertible {
    public let name: String
    public var description: String { "\(name): worker thread has stopped" }
}

/// A resource that can notice it is broken (a dropped connection) and should be made again.
public protocol ReconnectableResource: AnyObject {
    /// Whether the resource can no longer be used and must be replaced.
    var isBroken: Bool { get }
    /// Releases the resource; called on the owning thread.
    func close()
}

/// Owns one resource (a database connection) on one dedicated thread and runs closures against it.
///
/// The resource is created on the thread by `factory`, touched only there, and made again after it
/// reports itself broken, so callers see one error per outage and then a fresh connection.
public final class ConfinedWorker<Resource: ReconnectableResource>: @unchecked Sendable {
    // `resource` is only read and written on the worker thread; everything else is immutable or locked.
    private var resource: Resource?
    private let factory: @Sendable () throws -> Resource
    private let mailbox = Mailbox()
    private let stopped = Mutex(false)
    public let name: String

    public init(name: String, factory: @escaping @Sendable () throws -> Resource) {
        self.name = name
        self.factory = factory
        startThread(name: name) { [self] in self.loop() }
    }

    private func loop() {
        while true {
            for job in mailbox.drain() { job() }
            if stopped.withLock({ $0 }) && !mailbox.hasJobs { break }
            mailbox.wait(timeoutMilliseconds: 60_000)
        }
        resource?.close()
        resource = nil
    }

    /// Runs `body` with the resource on the worker thread.
    public func withResource<T: Sendable>(_ body: @escaping @Sendable (Resource) throws -> T) async throws -> T {
        if stopped.withLock({ $0 }) { throw WorkerStoppedError(name: name) }
        return try await withCheckedThrowingContinuation { continuation in
            mailbox.post { [self] in
                continuation.resume(with: Result { try self.onThread(body) })
            }
        }
    }

    private func onThread<T>(_ body: (Resource) throws -> T) throws -> T {
        let current: Resource
        if let existing = resource, !existing.isBroken {
            current = existing
        } else {
            resource?.close()
            resource = nil
            current = try factory()
            resource = current
        }
        defer {
            if current.isBroken {
                current.close()
                resource = nil
            }
        }
        return try body(current)
    }

    /// Stops the thread after the jobs already queued; the resource is closed on the thread.
    public func shutdown() {
        stopped.withLock { $0 = true }
        mailbox.post {}
    }
}

/// Errors of ``makeDirectories(_:mode:)``.
public struct FileSystemError: Error, CustomStringConvertible {
    public let description: String
    /// The failed call's errno, when one failed.
    public let code: Int32?
    public init(_ description: String, errno code: Int32? = nil) {
        self.description = description
        self.code = code
    }

    /// The filesystem has no room left (ENOSPC, EDQUOT).
    public var isFull: Bool { code == ENOSPC || code == EDQUOT }
}

/// `mkdir -p`.
public func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, mode) != 0 && errno != EEXIST {
            let code = errno
            throw FileSystemError("cannot create \(current): \(String(cString: strerror(code)))", errno: code)
        }
    }
}
