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
    /// Whether retrying the whole transaction may succeed (serialization failure, deadlock, lost connection).
    public var isTransient: Bool {
        kind == .connection || sqlState == "40001" || sqlState == "40P01" || sqlState?.hasPrefix("08") == true
            || sqlState == "57P01" || sqlState == "57P02" || sqlState == "57P03"
    }
}
