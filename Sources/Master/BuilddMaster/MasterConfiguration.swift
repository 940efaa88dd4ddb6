import Foundation
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
    /// The largest source file a submitter may upload (`PUT /v1/uploads`).
    public var maxUploadBytes: Int64 = 2 << 30
    /// How long a webhook may fail before it is disabled. Default a day.
    public var webhookGiveUpSeconds: Double = 86400
    /// How long a heartbeat keeps a running build's lease. Default 30 s.
    public var leaseSeconds: Int = 30
    /// How long a published job may wait for an agent's `accepted` before it is claimed again. Default 30 s.
    public var acceptTimeoutSeconds: Int = 30
    /// Jobs published per processor beyond its idle builders. Default 1.
    public var lookahead: Int = 1
    /// How often the dispatcher and watchdog run when nothing wakes them. Default 1 s.
    public var tick: Duration = .seconds(1)
    /// How often the dep-wait pass reads the archives' indexes (``DepWaitRetrier``).
    public var depWaitInterval: Duration = .seconds(300)
    /// How often the masters sample the farm for the plots (``FarmSampler``).
    public var sampleInterval: Duration = .seconds(60)
    /// `x-queue-type` of the queues this master declares: `classic`, or `quorum` on a cluster.
    public var queueType: String = "classic"
    /// Database connections of this master. Default 8.
    public var databaseConnections: Int = 8
    /// Status events are applied by this many lanes at once (a builder's events always in the same lane,
    /// in order). Default 4.
    public var eventLanes: Int = 4
    /// Most events one lane applies in one transaction. Default 64.
    public var eventBatch: Int = 64
    /// The broker's management API with a user that may create users (`http://admin:password@host:15672`):
    /// set, this master enrols build machines that present a join token (`POST /v1/enrol`).
    public var brokerManagementURL: String?
    /// Every master's URL, as enrolled machines list them under [master] url (default: this master's).
    public var enrolMasterURLs: [String]?
    /// This master's name in logs and broker connection names. Default the host name.
    public var name: String = "master"
    /// How legacy (launchpad-buildd) builders are followed.
    public var legacy = LegacyAdapterConfiguration()

    public init(databaseURL: String, brokerURL: String) {
        self.databaseURL = databaseURL
        self.brokerURL = brokerURL
    }

    /// Settings that are allowed but unsafe outside one trusted network; the master logs each at start.
    public var warnings: [String] {
        var warnings: [String] = []
        if tls == nil && !artifactBaseURL.hasPrefix("https://") {
            warnings.append("no TLS: the HTTP API and agents' uploads are plain http (set BUILDD_TLS_CERTIFICATE and BUILDD_TLS_KEY, or a TLS proxy and an https:// BUILDD_PUBLIC_URL)")
        }
        if brokerURL.split(separator: ",").contains(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("amqp://") }) {
            warnings.append("plain amqp:// to the broker: its password and every job cross the network in clear")
        }
        if !databaseURL.contains("sslmode=verify-full") && !Self.isLocal(databaseURL) {
            warnings.append("the database URL has no sslmode=verify-full: the connection may be unencrypted or its server unchecked")
        }
        return warnings
    }

    /// A libpq URL to this machine only (a Unix socket or loopback), where TLS protects nothing.
    static func isLocal(_ url: String) -> Bool {
        guard let at = url.range(of: "@") ?? url.range(of: "://") else { return false }
        let rest = url[at.upperBound...]
        let host = rest.prefix { $0 != ":" && $0 != "/" && $0 != "?" && $0 != "," }
        return host.isEmpty || host == "localhost" || host.hasPrefix("127.") || host == "[::1]"
    }

    /// The artifact base URL handed to agents.
    public var artifactBaseURL: String {
        var base = publicURL ?? "\(tls == nil ? "http" : "https")://\(httpHost == "0.0.0.0" ? "127.0.0.1" : httpHost):\(httpPort)"
        while base.hasSuffix("/") { base.removeLast() }
        return base
    }
}
