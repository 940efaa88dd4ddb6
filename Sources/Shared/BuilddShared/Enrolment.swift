/// What `POST /v1/enrol` asks and answers: a build machine presents a join token and gets its builder name,
/// processors, its own broker user and password, and where the broker and masters are. `buildd-agent enrol`
/// writes it into the agent's configuration and secret file.
public struct EnrolmentRequest: Codable, Sendable, Equatable {
    /// The builder name the machine asks for (`[a-z0-9][a-z0-9.+_-]{0,63}`; by default its host name).
    public var name: String
    /// The processors it serves; nil: every processor the token names.
    public var processors: [String]?

    public init(name: String, processors: [String]? = nil) {
        self.name = name
        self.processors = processors
    }
}

public struct EnrolmentGrant: Codable, Sendable, Equatable {
    public var name: String
    public var processors: [String]
    /// The broker's nodes for this machine's user (`amqps://NAME@host:5671/vhost?cacert=...`), comma-separated,
    /// with no password: that is ``brokerPassword``, which goes into the agent's password file alone.
    public var brokerURL: String
    public var brokerPassword: String
    public var queueType: String
    /// The masters the agent lists under [master] url.
    public var masterURLs: [String]

    enum CodingKeys: String, CodingKey {
        case name, processors
        case brokerURL = "broker_url", brokerPassword = "broker_password", queueType = "queue_type"
        case masterURLs = "master_urls"
    }

    public init(name: String, processors: [String], brokerURL: String, brokerPassword: String, queueType: String,
                masterURLs: [String]) {
        self.name = name
        self.processors = processors
        self.brokerURL = brokerURL
        self.brokerPassword = brokerPassword
        self.queueType = queueType
        self.masterURLs = masterURLs
    }

    /// Each node of `brokerURL` (comma-separated, as masters take it) with its `user:password@` replaced by
    /// `user@`: the farm's broker as a machine enrolled as `user` reaches it (path and query kept).
    public static func brokerURL(_ brokerURL: String, forUser user: String) -> String {
        brokerURL.split(separator: ",").map { node in
            let text = node.trimmed(" ")
            guard let scheme = text.firstRange(of: "://") else { return text }
            let rest = text[scheme.upperBound...]
            let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
            let hostPart = rest[..<authorityEnd].lastIndex(of: "@").map { rest[rest.index(after: $0)..<authorityEnd] }
                ?? rest[..<authorityEnd]
            return String(text[..<scheme.upperBound]) + user + "@" + hostPart + rest[authorityEnd...]
        }.joined(separator: ", ")
    }
}
