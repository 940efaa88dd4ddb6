import BuilddShared
import CLibPQ

#if canImport(Glibc)
import Glibc
#endif

/// A value bound to a statement parameter, sent in text format.
public protocol PostgresBindable: Sendable {
    var postgresText: String { get }
}

extension String: PostgresBindable { public var postgresText: String { self } }
extension Int: PostgresBindable { public var postgresText: String { String(self) } }
extension Int32: PostgresBindable { public var postgresText: String { String(self) } }
extension Int64: PostgresBindable { public var postgresText: String { String(self) } }
extension Double: PostgresBindable { public var postgresText: String { String(self) } }
extension Bool: PostgresBindable { public var postgresText: String { self ? "t" : "f" } }

/// One row of a result, values as text (NULL is nil).
public struct PostgresRow: Sendable {
    public let columns: [String: Int]
    public let values: [String?]

    public subscript(_ column: String) -> String? {
        guard let index = columns[column] else { return nil }
        return values[index]
    }

    public func string(_ column: String) throws -> String {
        guard let value = self[column] else {
            throw PostgresError(.decoding, message: "column \(column) is NULL or missing")
        }
        return value
    }

    public func int64(_ column: String) throws -> Int64 {
        guard let value = Int64(try string(column)) else {
            throw PostgresError(.decoding, message: "column \(column) is not an integer")
        }
        return value
    }

    public func int(_ column: String) throws -> Int { Int(try int64(column)) }

    public func double(_ column: String) throws -> Double {
        guard let value = Double(try string(column)) else {
            throw PostgresError(.decoding, message: "column \(column) is not a number")
        }
        return value
    }

    public func bool(_ column: String) throws -> Bool { try string(column) == "t" }

    public func optionalInt64(_ column: String) -> Int64? { self[column].flatMap { Int64($0) } }
    public func optionalDouble(_ column: String) -> Double? { self[column].flatMap { Double($0) } }
}

/// The rows of a statement and how many rows it changed.
public struct PostgresResult: Sendable {
    public let rows: [PostgresRow]
    public let affectedRows: Int

    public var first: PostgresRow? { rows.first }
}

/// A NOTIFY received on a LISTENed channel.
public struct PostgresNotification: Sendable, Equatable {
    public let channel: String
    public let payload: String

    public init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
}

/// One libpq connection. Not thread-safe: ``ConfinedWorker`` keeps it on one thread.
public final class PostgresConnection: ReconnectableResource {
    private var handle: OpaquePointer?
    /// Statements prepared on this connection, by SQL text: each is parsed and planned once per connection
    /// rather than at every call (on a small machine planning costs as much as the round trip).
    private var prepared: [String: String] = [:]
    /// Past this many distinct statements the rest run unprepared.
    static let maxPrepared = 512

    /// What buildd sets unless the URL says otherwise: a host that stops answering (a partition, a dead
    /// primary) fails a connection attempt after 5 s and a statement in flight after about 10 s
    /// (`tcp_user_timeout`, keepalives), instead of the kernel's 15 minutes of retransmissions, so a master
    /// moves on to the next host of a multi-host URL, or steps down from its status shards, in bounded time.
    public static let networkDefaults: [(String, String)] = [
        ("connect_timeout", "5"), ("tcp_user_timeout", "10000"),
        ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3"),
    ]

    /// Connects with a libpq URL (`postgresql://user:password@host:port/db?sslmode=...`) or keyword string;
    /// ``networkDefaults`` apply to what it leaves unset. `settings` are server parameters set on the session
    /// once it is made (`set_config`, e.g. `lock_timeout`).
    public init(url: String, applicationName: String = "buildd", settings: [(String, String)] = []) throws {
        // libpq reads the arrays in order and the last value of a keyword wins: the defaults come first, and
        // the URL, expanded from `dbname`, overrides them.
        let keywords = Self.networkDefaults.map(\.0) + ["dbname"]
        let values = Self.networkDefaults.map(\.1) + [url]
        handle = Self.withCStrings(keywords) { keywordPointers in
            Self.withCStrings(values) { valuePointers in PQconnectdbParams(keywordPointers, valuePointers, 1) }
        }
        guard let handle else { throw PostgresError(.connection, message: "out of memory") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.errorText(handle)
            PQfinish(handle)
            self.handle = nil
            throw PostgresError(.connection, message: "cannot connect to PostgreSQL: \(message)")
        }
        buildd_pq_silence_notices(handle)
        _ = try execute("SELECT set_config('application_name', $1, false)", [applicationName])
        for (name, value) in settings { _ = try execute("SELECT set_config($1, $2, false)", [name, value]) }
    }

    deinit { close() }

    /// A NULL-terminated array of C strings, for libpq's keyword and value arrays.
    private static func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> T) -> T {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer<CChar>($0) } + [nil]
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    public var isBroken: Bool {
        guard let handle else { return true }
        return PQstatus(handle) != CONNECTION_OK
    }

    /// The socket, for `poll(2)`.
    public var socketDescriptor: Int32 { handle.map { PQsocket($0) } ?? -1 }

    static func errorText(_ handle: OpaquePointer?) -> String {
        guard let handle, let text = PQerrorMessage(handle) else { return "unknown error" }
        return String(cString: text).trimmingTrailingNewlines()
    }

    /// Runs one statement with parameters ($1, $2, ...); values are never spliced into the SQL. With `prepare`
    /// false the statement is planned for these values and not kept: for statements whose best plan depends on
    /// the values (a page's filters: a builder with no builds wants its own index, one with many the primary
    /// key), where a prepared statement's generic plan would serve every value one way, and whose many shapes
    /// would fill the cache the farm's own statements live in.
    @discardableResult
    public func query(_ sql: String, _ parameters: [(any PostgresBindable)?] = [], prepare: Bool = true) throws -> PostgresResult {
        guard let handle else { throw PostgresError(.connection, message: "connection is closed") }
        let texts = parameters.map { $0?.postgresText }
        var cStrings: [UnsafeMutablePointer<CChar>?] = texts.map { $0.flatMap { strdup($0) } }
        defer { cStrings.forEach { free($0) } }
        let statement = prepare ? try preparedStatement(for: sql, handle: handle) : nil
        let result: OpaquePointer? = cStrings.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: max(buffer.count, 1)) {
                if let statement {
                    PQexecPrepared(handle, statement, Int32(texts.count), texts.isEmpty ? nil : $0, nil, nil, 0)
                } else {
                    PQexecParams(handle, sql, Int32(texts.count), nil, texts.isEmpty ? nil : $0, nil, nil, 0)
                }
            }
        }
        guard let result else {
            throw PostgresError(.connection, message: Self.errorText(handle))
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK:
            break
        default:
            throw Self.error(of: result, handle: handle)
        }
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        var columns: [String: Int] = [:]
        for column in 0..<columnCount {
            columns[String(cString: PQfname(result, Int32(column)))] = column
        }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) != 0 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                }
            }
            rows.append(PostgresRow(columns: columns, values: values))
        }
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        return PostgresResult(rows: rows, affectedRows: affected)
    }

    /// The error a failed result reports.
    static func error(of result: OpaquePointer, handle: OpaquePointer) -> PostgresError {
        func field(_ code: Int32) -> String? {
            PQresultErrorField(result, code).map { String(cString: $0) }
        }
        let sqlState = field(Int32(UInt8(ascii: "C")))
        let message = field(Int32(UInt8(ascii: "M"))) ?? errorText(handle)
        let detail = field(Int32(UInt8(ascii: "D")))
        let kind: PostgresError.Kind = (PQstatus(handle) != CONNECTION_OK || sqlState == nil) ? .connection : .server
        return PostgresError(kind, sqlState: sqlState, message: message, detail: detail)
    }

    /// The name of `sql` prepared on this connection, preparing it the first time; nil for statements that
    /// are not worth it or cannot be prepared (transaction control, utility statements) and once the cache
    /// is full. A statement that cannot be prepared (a syntax error, a missing column) throws its error.
    private func preparedStatement(for sql: String, handle: OpaquePointer) throws -> String? {
        if let name = prepared[sql] { return name }
        guard prepared.count < Self.maxPrepared else { return nil }
        let head = sql.drop { $0 == " " || $0 == "\n" }.prefix(7).uppercased()
        guard ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"].contains(where: { head.hasPrefix($0) }) else { return nil }
        let name = "buildd_\(prepared.count)"
        guard let result = PQprepare(handle, name, sql, 0, nil) else {
            throw PostgresError(.connection, message: Self.errorText(handle))
        }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COMMAND_OK else { throw Self.error(of: result, handle: handle) }
        prepared[sql] = name
        return name
    }

    /// Runs a statement and returns how many rows it changed.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [(any PostgresBindable)?] = []) throws -> Int {
        try query(sql, parameters).affectedRows
    }

    /// Runs several statements with no parameters (a migration).
    public func executeScript(_ sql: String) throws {
        guard let handle else { throw PostgresError(.connection, message: "connection is closed") }
        guard let result = PQexec(handle, sql) else {
            throw PostgresError(.connection, message: Self.errorText(handle))
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let sqlState = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            throw PostgresError(.server, sqlState: sqlState, message: message ?? Self.errorText(handle))
        }
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            if !isBroken { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Starts listening on a channel.
    public func listen(_ channel: String) throws {
        guard let handle else { throw PostgresError(.connection, message: "connection is closed") }
        guard let quoted = PQescapeIdentifier(handle, channel, channel.utf8.count) else {
            throw PostgresError(.connection, message: Self.errorText(handle))
        }
        defer { PQfreemem(quoted) }
        try execute("LISTEN \(String(cString: quoted))")
    }

    /// Waits up to `timeoutMilliseconds` for notifications and returns those that arrived.
    public func waitForNotifications(timeoutMilliseconds: Int32) throws -> [PostgresNotification] {
        guard let handle else { throw PostgresError(.connection, message: "connection is closed") }
        var notifications = drainNotifications()
        if !notifications.isEmpty { return notifications }
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, timeoutMilliseconds)
        if ready > 0 {
            guard PQconsumeInput(handle) == 1 else {
                throw PostgresError(.connection, message: Self.errorText(handle))
            }
        }
        if PQstatus(handle) != CONNECTION_OK {
            throw PostgresError(.connection, message: Self.errorText(handle))
        }
        notifications = drainNotifications()
        return notifications
    }

    private func drainNotifications() -> [PostgresNotification] {
        guard let handle else { return [] }
        var result: [PostgresNotification] = []
        while let notify = PQnotifies(handle) {
            result.append(PostgresNotification(channel: String(cString: notify.pointee.relname),
                                               payload: String(cString: notify.pointee.extra)))
            PQfreemem(notify)
        }
        return result
    }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var text = self
        while let last = text.last, last.isNewline || last == " " { text.removeLast() }
        return text
    }
}
