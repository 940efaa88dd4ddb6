import BuilddShared

#if canImport(Glibc)
import Glibc
#endif

/// The agent's settings, read from an INI-style file. Lines starting with `#` or `;` are comments, and so
/// is the rest of a line after ` #` or ` ;`, except in `[commands]`, whose values are taken whole:
///
/// ```ini
/// [agent]
/// name = bld-amd64-01          ; the builder name registered with `buildd-master builder add`
/// processors = amd64, i386     ; job queues to take work from
/// workdir = /var/lib/buildd-agent
/// heartbeat = 5                ; seconds between heartbeats
/// keep_workdir = false         ; keep a build's folder after its upload (debugging)
/// build_timeout = 86400        ; seconds a build may run (0: no limit); then it is stopped, PACKAGEFAIL
/// max_log_bytes = 104857600    ; a build whose log grows past this is stopped, PACKAGEFAIL
/// shutdown_policy = giveback   ; on SIGTERM: giveback (stop the build, the master requeues it) or finish
/// shutdown_deadline = 3600     ; with finish: seconds to wait for the build before giving it back
/// stop_timeout = 30            ; then seconds to report it (a broker may be gone) before stopping anyway:
///                              ; what was not delivered stays in the state file for the next start
/// build_user = buildd-build    ; when the agent runs as root, builds run as this user
/// privileged_commands = binarypackage ; build types whose command starts as root: it makes a root per
///                              ; build and drops to build_user itself (`buildd-binarypackage`)
/// chroot_cache = 3             ; chroot tarballs kept in workdir/chroots (the most recently used)
/// shared_queue = true           ; take jobs from the processors' shared queues: true for a virtualized
///                              ; builder with no resources; false for any other (its jobs are addressed
///                              ; to it, on its control queue, as `builder add|set` describes it)
/// reset_command = /usr/local/sbin/reset-builder ; run (/bin/sh -c, as the agent's user) when the master
///                              ; asks this machine to reset itself (`builder set-reset NAME --agent`);
///                              ; its exit status is the reset's outcome
///
/// [broker]
/// url = amqp://bld-amd64-01@broker.example:5672/buildd   ; a cluster: every node's URL, comma-separated
/// password_file = /etc/buildd/agent.secret   ; never put the password on a command line
/// queue_type = classic          ; the farm's queue type: quorum with deploy/rabbitmq/definitions.json
///
/// [master]
/// url = https://master1.example:8443, https://master2.example:8443
/// ; uploads and source downloads go first to the master a job names (matched to one of these by scheme,
/// ; host as this machine resolves it, and port), then to the others; never to a host not listed here
/// ca_file = /etc/buildd/ca.pem  ; the CA that signed the masters' certificates (default: the system's store)
/// insecure_http = false         ; true allows http:// masters: tokens, sources and results in clear
///
/// [commands]
/// ; one command per build type, run with /bin/sh -c
/// binarypackage = /usr/lib/buildd/sbuild-wrapper
/// ```
///
/// `BUILDD_AGENT_<SECTION>_<KEY>` environment variables override file values
/// (e.g. `BUILDD_AGENT_BROKER_PASSWORD`).
public struct AgentConfiguration: Sendable, Equatable {
    public var name: String
    public var processors: [String]
    public var workDirectory: String
    public var heartbeatSeconds: Int
    public var keepWorkDirectory: Bool
    /// Seconds a build may run; nil for no limit.
    public var buildTimeoutSeconds: Int?
    public var maxLogBytes: Int64
    public var shutdownPolicy: ShutdownPolicy
    public var shutdownDeadlineSeconds: Int
    /// Seconds a stopping agent may spend reporting the given-back build before it exits anyway (the
    /// report stays in the state file and is delivered at the next start). A second signal does not wait.
    public var stopTimeoutSeconds: Int = 30
    /// The user builds run as when the agent runs as root.
    public var buildUser: String?
    /// Build types whose command starts as root even when `buildUser` is set: commands that unpack a
    /// root, mount and chroot (`buildd-binarypackage`), and run the package build as `buildUser` themselves
    /// (they get it as `BUILDD_BUILD_USER`).
    public var privilegedCommands: Set<String> = []
    /// How many chroot tarballs stay cached in `workdir/chroots` (the most recently used).
    public var chrootCache: Int = 3
    /// Whether it takes jobs from its processors' shared queues (a plain builder: ``BuilderPlacement``), or
    /// only those addressed to it on its control queue.
    public var sharedQueue = true
    /// Run when the master asks the agent to reset its machine (``ResetMethod/agent``); nil: it cannot.
    public var resetCommand: String?
    /// Every node of the broker cluster (`url = a, b, c`; one for a single broker), each with the password
    /// filled in (from the file or environment). Never log them; use their `description`.
    public var brokerNodes: [ServiceURL]
    /// The first broker node.
    public var brokerURL: ServiceURL { brokerNodes[0] }
    public var queueType: String
    /// The masters' artifact store URLs. Uploads go to the one named in the job and, when it does not
    /// answer, to the others (masters of one farm share their artifact store).
    public var masterURLs: [String]
    /// The CAs trusted for the masters' certificates; nil: the system's store.
    public var caFile: String?
    /// Whether http:// masters are allowed (`insecure_http = true`).
    public var insecureHTTP = false
    /// Where the broker password was read from (`password_file`); nil when it came from the environment.
    public var passwordFile: String?
    /// Build type -> command run with `/bin/sh -c` in the build's folder.
    public var commands: [String: String]

    /// What SIGTERM does to a running build.
    public enum ShutdownPolicy: String, Sendable {
        /// Stop it and report GIVENBACK: the master requeues it at once.
        case giveback
        /// Let it finish and report it, up to the deadline; then give it back.
        case finish
    }

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let problems: [String]
        public var description: String { problems.joined(separator: "\n") }
    }

    /// Parses the file text; `environment` overrides, `readFile` reads secrets (injected for tests).
    public static func parse(_ text: String, environment: [String: String] = [:],
                             readFile: (String) -> String? = AgentConfiguration.readFile) throws -> AgentConfiguration {
        var values: [String: [String: String]] = [:]
        var problems: [String] = []
        var section = ""
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(rawLine)
            let start = line.trimmed(" \t\r")
            if start.isEmpty || start.hasPrefix("#") || start.hasPrefix(";") { continue }
            // Inline comments (` ; ...` or ` # ...`) end a value, except in [commands], whose values are
            // shell command lines taken whole.
            if section != "commands" || start.hasPrefix("[") {
                var previous: Character = " "
                if let comment = line.indices.first(where: { index in
                    defer { previous = line[index] }
                    return (line[index] == "#" || line[index] == ";") && (previous == " " || previous == "\t")
                }) {
                    line = line[..<comment]
                }
            }
            let trimmed = line.trimmed(" \t\r")
            if trimmed.isEmpty { continue }
            if trimmed.hasPrefix("[") {
                guard trimmed.hasSuffix("]") else { problems.append("line \(number + 1): unclosed section header"); continue }
                section = String(trimmed.dropFirst().dropLast()).lowercased()
                guard ["agent", "broker", "master", "commands"].contains(section) else {
                    problems.append("line \(number + 1): unknown section [\(section)]")
                    continue
                }
                continue
            }
            guard let equals = trimmed.firstIndex(of: "=") else {
                problems.append("line \(number + 1): expected key = value")
                continue
            }
            guard !section.isEmpty else { problems.append("line \(number + 1): key outside a section"); continue }
            let key = Substring(trimmed[..<equals]).trimmed(" \t").lowercased()
            let value = Substring(trimmed[trimmed.index(after: equals)...]).trimmed(" \t")
            values[section, default: [:]][key] = value
        }
        for (name, value) in environment where name.hasPrefix("BUILDD_AGENT_") {
            let parts = name.dropFirst("BUILDD_AGENT_".count).lowercased().split(separator: "_", maxSplits: 1)
            guard parts.count == 2 else { continue }
            values[String(parts[0]), default: [:]][String(parts[1])] = value
        }
        let known: [String: Set<String>] = [
            "agent": ["name", "processors", "workdir", "heartbeat", "keep_workdir", "build_timeout", "max_log_bytes",
                      "shutdown_policy", "shutdown_deadline", "build_user", "privileged_commands", "chroot_cache", "stop_timeout",
                      "shared_queue", "reset_command"],
            "broker": ["url", "password", "password_file", "queue_type"],
            "master": ["url", "ca_file", "insecure_http"],
        ]
        for (section, keys) in known {
            for key in values[section, default: [:]].keys where !keys.contains(key) {
                problems.append("[\(section)] unknown key '\(key)'")
            }
        }
        func value(_ section: String, _ key: String) -> String? { values[section]?[key].flatMap { $0.isEmpty ? nil : $0 } }
        func required(_ section: String, _ key: String) -> String {
            if let found = value(section, key) { return found }
            problems.append("[\(section)] \(key) is required")
            return ""
        }

        let name = required("agent", "name")
        if !name.isEmpty && !Naming.isValidName(name) { problems.append("[agent] name '\(name)' is not a valid builder name") }
        let processors = required("agent", "processors").split(separator: ",").map { $0.trimmed(" ") }
        for processor in processors where !Naming.isValidName(processor) {
            problems.append("[agent] processor '\(processor)' is not a valid name")
        }
        let workdir = value("agent", "workdir") ?? "/var/lib/buildd-agent"
        let heartbeat = Int(value("agent", "heartbeat") ?? "5") ?? -1
        if !(1...60).contains(heartbeat) { problems.append("[agent] heartbeat must be 1-60 seconds") }
        let timeout = Int(value("agent", "build_timeout") ?? "86400") ?? -1
        if timeout < 0 { problems.append("[agent] build_timeout must be a number of seconds (0: no limit)") }
        let maxLog = Int64(value("agent", "max_log_bytes") ?? "104857600") ?? -1
        if maxLog < 4096 { problems.append("[agent] max_log_bytes must be at least 4096") }
        let policy = AgentConfiguration.ShutdownPolicy(rawValue: value("agent", "shutdown_policy") ?? "giveback")
        if policy == nil { problems.append("[agent] shutdown_policy must be giveback or finish") }
        let deadline = Int(value("agent", "shutdown_deadline") ?? "3600") ?? -1
        if deadline < 0 { problems.append("[agent] shutdown_deadline must be a number of seconds") }
        let keep = value("agent", "keep_workdir") ?? "false"
        if !["true", "false", "yes", "no"].contains(keep) { problems.append("[agent] keep_workdir must be true or false") }

        var brokerNodes: [ServiceURL] = []
        let brokerText = required("broker", "url")
        for text in brokerText.split(separator: ",").map({ $0.trimmed(" ") }) where !text.isEmpty {
            do {
                let node = try ServiceURL(parsing: text)
                if node.scheme != "amqp" && node.scheme != "amqps" {
                    problems.append("[broker] url must start with amqp:// or amqps://")
                }
                if node.password != nil {
                    problems.append("[broker] url must not contain the password: use password_file or BUILDD_AGENT_BROKER_PASSWORD")
                }
                if let first = brokerNodes.first, first.scheme != node.scheme || first.user != node.user || first.path != node.path {
                    problems.append("[broker] url: the nodes of one cluster share scheme, user and vhost (\(first) and \(node))")
                }
                brokerNodes.append(node)
            } catch {
                problems.append("[broker] url: \(error)")
            }
        }
        var password: String?
        if let given = value("broker", "password") {
            if environment["BUILDD_AGENT_BROKER_PASSWORD"] == nil {
                problems.append("[broker] password may only come from BUILDD_AGENT_BROKER_PASSWORD or password_file")
            } else {
                password = given
            }
        } else if let file = value("broker", "password_file") {
            if let secret = readFile(file) {
                password = secret.trimmed(" \n\r\t")
            } else {
                problems.append("[broker] password_file \(file) cannot be read")
            }
        }
        if let password { for index in brokerNodes.indices { brokerNodes[index].password = password } }
        if brokerNodes.isEmpty && !brokerText.isEmpty { problems.append("[broker] url names no broker") }
        let masterURLs = required("master", "url").split(separator: ",").map { url -> String in
            var text = url.trimmed(" ")
            while text.hasSuffix("/") { text.removeLast() }
            return text
        }
        let insecureText = value("master", "insecure_http") ?? "false"
        if !["true", "false", "yes", "no"].contains(insecureText) { problems.append("[master] insecure_http must be true or false") }
        let insecure = insecureText == "true" || insecureText == "yes"
        for url in masterURLs {
            switch (try? ServiceURL(parsing: url))?.scheme {
            case "https": break
            case "http" where insecure: break
            case "http":
                problems.append("[master] url '\(url)' is plain http: use https://, or set insecure_http = true "
                                + "to send tokens, sources and results in clear")
            default: problems.append("[master] url '\(url)' must be an https:// URL")
            }
        }
        let caFile = value("master", "ca_file")
        if let caFile, readFile(caFile) == nil { problems.append("[master] ca_file \(caFile) cannot be read") }
        if password == nil && !brokerText.isEmpty && value("broker", "password_file") == nil && value("broker", "password") == nil {
            problems.append("[broker] no password: set password_file (or BUILDD_AGENT_BROKER_PASSWORD); "
                            + "an agent never logs in as guest")
        }
        if brokerNodes.contains(where: { $0.user == nil }) {
            problems.append("[broker] url needs the agent's own broker user (amqps://NAME@host/vhost)")
        }
        let queueType = value("broker", "queue_type") ?? "classic"
        if !["classic", "quorum"].contains(queueType) {
            problems.append("[broker] queue_type '\(queueType)' must be classic or quorum (the farm's queue type)")
        }
        var commands: [String: String] = [:]
        for (type, command) in values["commands"] ?? [:] {
            if !Naming.isValidName(type) { problems.append("[commands] '\(type)' is not a valid build type") }
            commands[type] = command
        }
        if commands.isEmpty { problems.append("[commands] needs at least one build type, e.g. binarypackage = ...") }
        for (type, command) in commands.sorted(by: { $0.key < $1.key }) {
            do { _ = try CommandTemplate.render(command, values: [:]) } catch {
                problems.append("[commands] \(type): \(error)")
            }
        }

        let privileged = Set((value("agent", "privileged_commands") ?? "").split(separator: ",")
            .map { $0.trimmed(" ") }.filter { !$0.isEmpty })
        for type in privileged.sorted() where commands[type] == nil {
            problems.append("[agent] privileged_commands names '\(type)', which has no command in [commands]")
        }
        let stopTimeout = Int(value("agent", "stop_timeout") ?? "30") ?? -1
        if !(1...3600).contains(stopTimeout) { problems.append("[agent] stop_timeout must be 1-3600 seconds") }
        let chrootCache = Int(value("agent", "chroot_cache") ?? "3") ?? -1
        if chrootCache < 1 { problems.append("[agent] chroot_cache must be at least 1") }
        let sharedText = value("agent", "shared_queue") ?? "true"
        if !["true", "false", "yes", "no"].contains(sharedText) { problems.append("[agent] shared_queue must be true or false") }

        func finish() throws -> AgentConfiguration {
            guard problems.isEmpty else { throw Invalid(problems: problems) }
            var configuration = AgentConfiguration(name: name, processors: processors, workDirectory: workdir,
                                      heartbeatSeconds: heartbeat, keepWorkDirectory: keep == "true" || keep == "yes",
                                      buildTimeoutSeconds: timeout == 0 ? nil : timeout, maxLogBytes: maxLog,
                                      shutdownPolicy: policy ?? .giveback, shutdownDeadlineSeconds: deadline,
                                      buildUser: value("agent", "build_user"),
                                      brokerNodes: brokerNodes, queueType: queueType,
                                      masterURLs: masterURLs, commands: commands)
            configuration.privilegedCommands = privileged
            configuration.caFile = caFile
            configuration.passwordFile = value("broker", "password_file")
            configuration.insecureHTTP = insecure
            configuration.chrootCache = chrootCache
            configuration.stopTimeoutSeconds = stopTimeout
            configuration.sharedQueue = sharedText == "true" || sharedText == "yes"
            configuration.resetCommand = value("agent", "reset_command").flatMap { $0.isEmpty ? nil : $0 }
            return configuration
        }
        return try finish()
    }

    /// Reads a whole file, or nil.
    public static func readFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count <= 0 { break }
            bytes.append(contentsOf: buffer[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The broker user, which is also the AMQP `user_id` of every event.
    public var brokerUser: String { brokerURL.user ?? "guest" }

    /// What an agent that is not root is warned about: it cannot run builds as another user.
    public static let buildsAsAgentWarning = "the agent is not root: builds run as the agent's own user and can read "
        + "its password file, the upload key of the build it runs (in the agent's memory, through /proc) and signal it; run it as root with [agent] build_user "
        + "(docs/deploy.md, section 5)"

    /// What is allowed but unsafe outside one trusted network: `check-config` prints these and the agent
    /// logs them at start.
    public var warnings: [String] {
        var warnings: [String] = []
        for url in masterURLs where url.hasPrefix("http://") {
            warnings.append("[master] \(url) is plain http (insecure_http = true): upload keys, sources and results cross the network in clear")
        }
        if brokerNodes.contains(where: { $0.scheme == "amqp" }) {
            warnings.append("[broker] plain amqp://: the broker password, every job and every event cross the network in clear; use amqps://")
        }
        if brokerNodes.contains(where: { $0.scheme == "amqps" && ($0.query["verify"] == "false" || $0.query["verify"] == "0") }) {
            warnings.append("[broker] amqps:// with verify=false: the broker's certificate is not checked")
        }
        return warnings
    }
}

extension AgentConfiguration {
    /// The configuration as the file text ``parse(_:environment:readFile:)`` reads, every setting spelled
    /// out; never the password (it comes from `password_file` or the environment, as in any agent.conf).
    public var fileText: String {
        // ` ;` and ` #` start a comment: a value that begins with `;` or `#` follows the `=` directly.
        func setting(_ key: String, _ value: String) -> String {
            value.first == ";" || value.first == "#" ? "\(key) =\(value)" : "\(key) = \(value)"
        }
        var lines = ["[agent]", "name = \(name)", "processors = \(processors.joined(separator: ","))",
                     setting("workdir", workDirectory), "heartbeat = \(heartbeatSeconds)",
                     "keep_workdir = \(keepWorkDirectory)", "build_timeout = \(buildTimeoutSeconds ?? 0)",
                     "max_log_bytes = \(maxLogBytes)", "shutdown_policy = \(shutdownPolicy.rawValue)",
                     "shutdown_deadline = \(shutdownDeadlineSeconds)", "stop_timeout = \(stopTimeoutSeconds)"]
        if let buildUser { lines.append(setting("build_user", buildUser)) }
        if !privilegedCommands.isEmpty { lines.append("privileged_commands = \(privilegedCommands.sorted().joined(separator: ","))") }
        lines.append("chroot_cache = \(chrootCache)")
        if !sharedQueue { lines.append("shared_queue = false") }
        if let resetCommand { lines.append(setting("reset_command", resetCommand)) }
        lines += ["", "[broker]", "url = \(brokerNodes.map(Self.urlText).joined(separator: ", "))",
                  "queue_type = \(queueType)"] + (passwordFile.map { [setting("password_file", $0)] } ?? []) + [
                  "", "[master]", "url = \(masterURLs.joined(separator: ", "))", "insecure_http = \(insecureHTTP)"]
        if let caFile { lines.append(setting("ca_file", caFile)) }
        lines += ["", "[commands]"]
        lines += commands.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A URL without its password, percent-encoded so that parsing it gives the same parts back.
    static func urlText(_ url: ServiceURL) -> String {
        var text = "\(url.scheme)://"
        if let user = url.user { text += ServiceURL.percentEncode(user) + "@" }
        text += url.host.contains(":") ? "[\(url.host)]" : url.host
        text += ":\(url.port)"
        if !url.path.isEmpty { text += "/" + ServiceURL.percentEncode(String(url.path.dropFirst())) }
        if !url.query.isEmpty {
            text += "?" + url.query.sorted { $0.key < $1.key }
                .map { ServiceURL.percentEncode($0.key) + "=" + ServiceURL.percentEncode($0.value) }
                .joined(separator: "&")
        }
        return text
    }
}
