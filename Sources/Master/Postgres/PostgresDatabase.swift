import BuilddShared
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A small pool of PostgreSQL connections, each on a thread of its own.
///
/// Every call picks the least busy connection. A connection that drops is made again on its next use,
/// so callers see one error per outage.
public final class PostgresDatabase: Sendable {
    private let workers: [ConfinedWorker<PostgresConnection>]
    private let busy: Mutex<[Int]>
    public let url: String

    /// - Parameters:
    ///   - url: a libpq connection URL.
    ///   - connections: how many connections (and threads). Default 4.
    ///   - settings: server parameters set on each session when it is made.
    public init(url: String, connections: Int = 4, applicationName: String = "buildd", settings: [(String, String)] = []) {
        self.url = url
        let count = max(1, connections)
        workers = (0..<count).map { index in
            ConfinedWorker(name: "pg-\(index)") {
                try PostgresConnection(url: url, applicationName: applicationName, settings: settings)
            }
        }
        busy = Mutex([Int](repeating: 0, count: count))
    }

    /// Runs `body` with a connection, on that connection's thread.
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        let index = busy.withLock { counts -> Int in
            let chosen = counts.indices.min { counts[$0] < counts[$1] }!
            counts[chosen] += 1
            return chosen
        }
        defer { busy.withLock { $0[index] -= 1 } }
        return try await workers[index].withResource(body)
    }

    /// Runs `body` in a transaction.
    public func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await withConnection { try $0.transaction(body) }
    }

    /// Runs one statement (``PostgresConnection/query(_:_:prepare:)``).
    @discardableResult
    public func query(_ sql: String, _ parameters: [(any PostgresBindable)?] = [], prepare: Bool = true) async throws
        -> PostgresResult {
        try await withConnection { try $0.query(sql, parameters, prepare: prepare) }
    }

    /// Closes every connection.
    public func shutdown() {
        workers.forEach { $0.shutdown() }
    }
}

/// Listens for NOTIFY on its own connection and thread, reconnecting after failures.
///
/// After each (re)connect it yields a notification with channel `""`, so a consumer rescans whatever
/// it might have missed while the connection was down.
public final class PostgresListener: Sendable {
    public let notifications: AsyncStream<PostgresNotification>
    private let continuation: AsyncStream<PostgresNotification>.Continuation
    private let stopping = Mutex(false)

    public init(url: String, channels: [String], logger: Logger) {
        (notifications, continuation) = AsyncStream.makeStream(of: PostgresNotification.self,
                                                               bufferingPolicy: .bufferingNewest(1024))
        let continuation = continuation
        startThread(name: "pg-listen") { [self] in
            var connection: PostgresConnection?
            while !self.stopping.withLock({ $0 }) {
                do {
                    if connection == nil {
                        let fresh = try PostgresConnection(url: url, applicationName: "buildd-listener")
                        for channel in channels { try fresh.listen(channel) }
                        connection = fresh
                        continuation.yield(PostgresNotification(channel: "", payload: "connected"))
                    }
                    for notification in try connection!.waitForNotifications(timeoutMilliseconds: 500) {
                        continuation.yield(notification)
                    }
                } catch {
                    logger.warning("database listener failed", metadata: ["error": "\(error)"])
                    connection?.close()
                    connection = nil
                    usleep(1_000_000)
                }
            }
            connection?.close()
            continuation.finish()
        }
    }

    public func shutdown() {
        stopping.withLock { $0 = true }
    }
}
