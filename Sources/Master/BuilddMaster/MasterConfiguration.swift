/// Settings of `buildd-master serve`.
public struct MasterConfiguration: Sendable {
    /// libpq URL of the database.
    public var databaseURL: String
    /// `amqp://` URL of the broker.
    public var brokerURL: String
    /// Address the HTTP server (artifacts, API, health) listens on. Default 127.0.0.1.
    public var httpHost: String = "127.0.0.1"
    /// Port of the HTTP server. Default 8080.
    public var httpPort: Int = 8080
    /// The base URL agents use to reach this master's artifact store. Default `https://<httpHost>:<httpPort>`
    /// when the master serves TLS, else `http://...`.
    public var publicURL: String?
    /// Certificate chain and key (PEM files) of the HTTPS listener; nil: plain HTTP (behind a TLS proxy,
    /// or on a trusted network).
    public var tls: (certificate: String, key: String)?
    /// Whether reading public builds needs no token. Private builds always need one.
    public var anonymousRead: Bool = true
    /// Where artifacts are stored, content-addressed. Default `./artifacts`.
    public var artifactDirectory: String = "artifacts"
    /// Largest artifact accepted, in bytes. Default 4 GiB.
    public var maxArtifactBytes: Int64 = 4 << 30
    /// How long a heartbeat keeps a running build's lease. Default 30 s.
    public var leaseSeconds: Int = 30
    /// How long a published job may wait for an agent's `accepted` before it is claimed again. Default 30 s.
    public var acceptTimeoutSeconds: Int = 30
    /// Jobs published per processor beyond its idle builders. Default 1.
    public var lookahead: Int = 1
    /// How often the dispatcher and watchdog run when nothing wakes them. Default 1 s.
    public var tick: Duration = .seconds(1)
    /// `x-queue-type` of the queues this master declares: `classic`, or `quorum` on a cluster.
    public var queueType: String = "classic"
    /// Database connections of this master. Default 8.
    public var databaseConnections: Int = 8
    /// Status events are applied by this many lanes at once (a builder's events always in the same lane,
    /// in order). Default 4.
    public var eventLanes: Int = 4
    /// Most events one lane applies in one transaction. Default 64.
    public var eventBatch: Int = 64
    /// This master's name in logs and broker connection names. Default the host name.
    public var name: String = "master"
    /// How legacy (launchpad-buildd) builders are followed.
    public var legacy = LegacyAdapterConfiguration()

    public init(databaseURL: String, brokerURL: String) {
        self.databaseURL = databaseURL
        self.brokerURL = brokerURL
    }

    /// The artifact base URL handed to agents.
    public var artifactBaseURL: String {
        var base = publicURL ?? "\(tls == nil ? "http" : "https")://\(httpHost == "0.0.0.0" ? "127.0.0.1" : httpHost):\(httpPort)"
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }
}
