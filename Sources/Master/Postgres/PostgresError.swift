/// An error from PostgreSQL or libpq: the SQLSTATE and the server's message when the server sent one.
///
/// `description` is safe to show: connection strings (and so passwords) never appear in it.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// Could not connect, or the connection dropped.
        case connection
        /// The server refused a statement; see `sqlState`.
        case server
        /// A value did not have the expected type or a row was missing.
        case decoding
    }

    public let kind: Kind
    /// The five-character SQLSTATE, e.g. `23505` for a unique violation.
    public let sqlState: String?
    public let message: String
    public let detail: String?

    public init(_ kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
    }

    public var description: String {
        var text = sqlState.map { "\($0): \(message)" } ?? message
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        return text
    }

    public var isUniqueViolation: Bool { sqlState == "23505" }
    public var isForeignKeyViolation: Bool { sqlState == "23503" }
    public var isCheckViolation: Bool { sqlState == "23514" }
    /// Whether retrying the whole transaction may succeed: a lost connection (08), a serialization failure
    /// (40001) or deadlock (40P01), a server short of resources (53), stopping, restarting or cancelling the
    /// statement (57), a system or I/O error (58), a lock that could not be had (55P03), or a server that
    /// refuses writes (25006: a standby, or a primary set read-only; a failover will give a writable one).
    /// Anything else (a constraint violated, bad data, a decoding error) fails the same way every time.
    public var isTransient: Bool {
        if kind == .connection { return true }
        guard let sqlState, kind == .server else { return false }
        return ["08", "53", "57", "58"].contains(String(sqlState.prefix(2)))
            || ["40001", "40P01", "55P03", "25006"].contains(sqlState)
    }
}
