/// An error from the broker or from librabbitmq, with the broker's reply code and text when it sent one.
///
/// `description` never contains credentials.
public struct AMQPError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        /// librabbitmq reported a failure (socket, protocol, timeout); `code` is its status.
        case library
        /// The broker closed the channel or connection; `code` is its AMQP reply code (e.g. 404, 406).
        case server
        /// A publish was nacked by the broker.
        case nacked
        /// A mandatory publish matched no queue.
        case unroutable
        /// The connection is down; the client is reconnecting.
        case notConnected
        /// An argument could not be sent (bad URL, unsupported scheme).
        case invalidArgument
    }

    public let kind: Kind
    public let code: Int
    public let text: String
    public let context: String

    public init(_ kind: Kind, code: Int = 0, text: String, context: String = "") {
        self.kind = kind
        self.code = code
        self.text = text
        self.context = context
    }

    public var description: String {
        let prefix = context.isEmpty ? "" : "\(context): "
        switch kind {
        case .server: return "\(prefix)broker replied \(code) \(text)"
        case .library: return "\(prefix)\(text) (status \(code))"
        default: return "\(prefix)\(text)"
        }
    }

    /// Whether the connection can no longer be used.
    public var breaksConnection: Bool {
        kind == .library || kind == .server || kind == .notConnected
    }
}
