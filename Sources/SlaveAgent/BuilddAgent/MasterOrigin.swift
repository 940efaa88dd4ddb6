import BuilddShared
#if canImport(Glibc)
import Glibc
#endif

/// Which configured master a job's upload URL points at.
///
/// A master publishes its `--public-url` in every job (the base of `upload_url`), while an agent lists the
/// masters it trusts under `[master] url`. The two are written by different people and rarely spelled alike:
/// `http://master1:8080` (the short host name a unit file gives) against `http://master1.example.org:8080/`,
/// or a name against its address. So they are compared as URLs - scheme, port, path prefix - and as hosts by
/// what the names resolve to on this machine: the same host when the names are equal (case aside) or their
/// addresses overlap. Everything then goes to the configured URL, never to a host the job alone names.
public struct MasterOrigin: Equatable, Sendable {
    /// The configured master URL the job belongs to (as written under `[master] url`, no trailing slash).
    public let master: String
    /// The job's resource below that master: the upload URL's path after the master's own path, with its
    /// leading slash, e.g. `/v1/builds/7/attempts/1/files/`.
    public let resource: String

    public init(master: String, resource: String) {
        self.master = master
        self.resource = resource
    }

    /// Resolves a host name to its addresses (numeric strings); empty when it does not resolve.
    public typealias Resolver = @Sendable (String) -> Set<String>

    /// Finds the configured master that `uploadURL` is on, or nil when it is on none of them.
    public static func find(uploadURL: String, masters: [String], resolve: Resolver = MasterOrigin.resolve)
        -> MasterOrigin? {
        guard let job = try? ServiceURL(parsing: uploadURL), job.query.isEmpty else { return nil }
        var jobAddresses: Set<String>?
        for master in masters {
            guard let configured = try? ServiceURL(parsing: master), configured.scheme == job.scheme,
                  configured.port == job.port
            else { continue }
            var prefix = configured.path
            while prefix.hasSuffix("/") { prefix.removeLast() }
            guard job.path.hasPrefix(prefix + "/") else { continue }
            var sameHost = configured.host.lowercased() == job.host.lowercased()
            if !sameHost {
                if jobAddresses == nil { jobAddresses = resolve(job.host) }
                sameHost = !jobAddresses!.isDisjoint(with: resolve(configured.host))
            }
            if sameHost {
                var base = master
                while base.hasSuffix("/") { base.removeLast() }
                return MasterOrigin(master: base, resource: String(job.path.dropFirst(prefix.count)))
            }
        }
        return nil
    }

    /// This machine's resolution of `host` (getaddrinfo: /etc/hosts, DNS, as configured), TCP addresses only.
    public static let resolve: Resolver = { host in
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { return [] }
        defer { freeaddrinfo(first) }
        var addresses: Set<String> = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(current.pointee.ai_addr, current.pointee.ai_addrlen, &text, socklen_t(text.count),
                           nil, 0, NI_NUMERICHOST) == 0 {
                addresses.insert(String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) },
                                        as: UTF8.self))
            }
            entry = current.pointee.ai_next
        }
        return addresses
    }
}
