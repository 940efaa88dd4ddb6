import ArgumentParser
import BuilddAgent
import BuilddShared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `buildd-agent enrol`: this machine enrols itself with a join token an operator made (`buildd-master token
/// add NAME --role enrol --expires 1h --processor amd64`). No admin password is involved: the master makes
/// the builder and the machine's own broker user, and this writes the agent's configuration and its broker
/// password (mode 0600).
struct Enrol: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Enrol this machine with a join token: register its builder and write its configuration.",
        discussion: """
            Asks the first master of --master that answers (POST /v1/enrol) to register this machine as builder \
            --name with its own broker user, then writes --config and --password-file (both mode 0600; neither \
            is replaced unless --force). The join token is good once: ask for a new one if this fails after the \
            master accepted it. Then start the agent: systemctl enable --now buildd-agent (or run --one-shot).
            Exit status: 0 enrolled, 64 bad usage, 69 no master answered, 73 a file exists, 77 the token was \
            refused (unknown, expired or used), 1 anything else.
            """)

    @Option(help: "The masters' URLs, comma-separated (https://; the first that answers enrols this machine).")
    var master: String
    @Option(help: "The join token (default: $BUILDD_JOIN_TOKEN, or --join-token-file).") var joinToken: String?
    @Option(help: "A file holding the join token.") var joinTokenFile: String?
    @Option(help: "This machine's builder name (default: its host name, lowercased).") var name: String?
    @Option(name: .customLong("processor"), help: "A processor to build for (repeatable; default: all the token's).")
    var processors: [String] = []
    @Option(help: "The agent configuration to write.") var config = "/etc/buildd/agent.conf"
    @Option(help: "Where the broker password goes (mode 0600).") var passwordFile = "/etc/buildd/agent.secret"
    @Option(help: "The CA that signed the masters' certificates (default: the system's).") var caFile: String?
    @Flag(help: "Allow http:// masters (a trusted network only).") var insecureHTTP = false
    @Option(help: "[agent] workdir.") var workdir = "/var/lib/buildd-agent"
    @Option(help: "[agent] build_user: the user builds run as.") var buildUser = "buildd-build"
    @Option(name: .customLong("command"), help: """
        TYPE=COMMAND for [commands] (repeatable; default: binarypackage=/usr/share/buildd/binarypackage, \
        run privileged: it makes a root per build).
        """)
    var commands: [String] = []
    @Flag(help: "Replace an existing configuration and password file.") var force = false

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let short = text.split(separator: ".").first.map(String.init) ?? text
        return String(short.lowercased().map { $0.isLetter || $0.isNumber || "+_-".contains($0) ? $0 : "-" }.prefix(64))
    }

    func validate() throws {
        if let name, !Naming.isValidName(name) {
            throw ValidationError("--name must be lowercase letters, digits and .+_- (at most 64, starting with a letter or digit)")
        }
        for processor in processors where !Naming.isValidName(processor) {
            throw ValidationError("invalid --processor '\(processor)'")
        }
        for command in commands where !command.contains("=") {
            throw ValidationError("--command takes TYPE=COMMAND, e.g. binarypackage=/usr/share/buildd/binarypackage")
        }
        if joinToken != nil && joinTokenFile != nil { throw ValidationError("--join-token and --join-token-file: give one") }
    }

    func run() async throws {
        let token: String
        if let joinTokenFile {
            guard let text = AgentConfiguration.readFile(joinTokenFile) else {
                throw ValidationError("cannot read \(joinTokenFile)")
            }
            token = text.trimmed(" \n\r\t")
        } else if let value = joinToken ?? ProcessInfo.processInfo.environment["BUILDD_JOIN_TOKEN"] {
            token = value
        } else {
            throw ValidationError("no join token: pass --join-token, --join-token-file or set BUILDD_JOIN_TOKEN")
        }
        let name = self.name ?? Self.hostName()
        guard Naming.isValidName(name) else { throw ValidationError("the host name '\(name)' is no builder name: pass --name") }
        if !force {
            for path in [config, passwordFile] where FileManager.default.fileExists(atPath: path) {
                printError("error: \(path) exists: this machine looks enrolled already (--force replaces it)")
                throw ExitCode(73)  // EX_CANTCREAT
            }
        }
        let masters = master.split(separator: ",").map { $0.trimmed(" ") }.filter { !$0.isEmpty }
        guard !masters.isEmpty else { throw ValidationError("--master needs a URL") }
        for url in masters where !url.hasPrefix("https://") && !(insecureHTTP && url.hasPrefix("http://")) {
            throw ValidationError("\(url): masters are https:// (--insecure-http allows http:// on a trusted network)")
        }
        let trust = try caFile.map { try TLSTrust(caFile: $0) }
        let request = WireCodec.encode(EnrolmentRequest(name: name, processors: processors.isEmpty ? nil : processors))
        var grant: EnrolmentGrant?
        var failures: [String] = []
        for url in masters {
            let response: SimpleHTTPClient.Response
            do {
                response = try SimpleHTTPClient.send(
                    method: "POST", url: url.trimmed("/") + "/v1/enrol",
                    headers: ["authorization": "Bearer \(token)", "content-type": "application/json"],
                    // Longer than a master may take: it waits on its broker's management API (up to 50 s) and,
                    // when its database fails meanwhile, asks it again whether the enrolment went through (15 s).
                    body: .bytes(request), timeoutSeconds: 90, trust: trust)
            } catch {
                failures.append("\(url): \(error)")
                continue
            }
            let message = Self.message(response)
            switch response.status {
            case 201:
                do { grant = try JSONDecoder().decode(EnrolmentGrant.self, from: Data(response.body)) } catch {
                    printError("error: \(url) enrolled this machine but its answer is unreadable: \(error)")
                    throw ExitCode.failure
                }
            case 401, 403:
                printError("error: \(url) refused the join token: \(message)")
                throw ExitCode(77)  // EX_NOPERM
            case 502, 503:
                failures.append("\(url): \(response.status) \(message)")
                continue
            default:
                printError("error: \(url) answered \(response.status): \(message)")
                throw ExitCode.failure
            }
            if grant != nil { break }
        }
        guard let grant else {
            printError("error: no master enrolled this machine:\n  " + failures.joined(separator: "\n  "))
            throw ExitCode(69)  // EX_UNAVAILABLE
        }
        let text = configurationText(grant, masters: masters)
        // Checked as the agent will read it before anything is written.
        do {
            _ = try AgentConfiguration.parse(text, environment: ["BUILDD_AGENT_BROKER_PASSWORD": grant.brokerPassword])
        } catch {
            printError("error: the configuration made from the master's answer is invalid (nothing written):\n\(error)\n"
                + "the builder \(grant.name) is registered: an operator removes it with `buildd-master builder remove \(grant.name)`")
            throw ExitCode.failure
        }
        try Self.writePrivate(passwordFile, grant.brokerPassword + "\n")
        try Self.writePrivate(config, text)
        print("enrolled \(grant.name) for \(grant.processors.joined(separator: ", ")): wrote \(config) and \(passwordFile)")
        print("start it: systemctl enable --now buildd-agent (or: buildd-agent run -c \(config) --one-shot)")
    }

    /// The agent's configuration for what the master granted.
    func configurationText(_ grant: EnrolmentGrant, masters: [String]) -> String {
        var commandLines = commands.map { command -> String in
            let parts = command.split(separator: "=", maxSplits: 1).map(String.init)
            return "\(parts[0].trimmed(" ")) = \(parts[1].trimmed(" "))"
        }
        var privileged: [String] = []
        if commandLines.isEmpty {
            commandLines = ["binarypackage = /usr/share/buildd/binarypackage"]
            privileged = ["binarypackage"]
        }
        var masterURLs = masters
        for url in grant.masterURLs where !masterURLs.contains(url) { masterURLs.append(url) }
        return """
            # Written by `buildd-agent enrol` for builder \(grant.name). Check with `buildd-agent check-config`.
            [agent]
            name = \(grant.name)
            processors = \(grant.processors.joined(separator: ","))
            workdir = \(workdir)
            build_user = \(buildUser)
            \(privileged.isEmpty ? "" : "privileged_commands = \(privileged.joined(separator: ","))")

            [broker]
            url = \(grant.brokerURL)
            password_file = \(passwordFile)
            queue_type = \(grant.queueType)

            [master]
            url = \(masterURLs.joined(separator: ", "))
            \(caFile.map { "ca_file = \($0)" } ?? "")
            \(insecureHTTP ? "insecure_http = true" : "")

            [commands]
            \(commandLines.joined(separator: "\n"))

            """
    }

    static func message(_ response: SimpleHTTPClient.Response) -> String {
        struct Problem: Decodable { let error: ErrorText?; struct ErrorText: Decodable { let message: String? } }
        if let problem = try? JSONDecoder().decode(Problem.self, from: Data(response.body)), let text = problem.error?.message {
            return text
        }
        return String(response.text.prefix(300))
    }

    /// Writes `text` to `path` with mode 0600 from its creation (never readable by others, even briefly).
    static func writePrivate(_ path: String, _ text: String) throws {
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ""
        if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        let temporary = path + ".enrol-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { throw ValidationError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fchmod(descriptor, 0o600)
        fsync(descriptor)
        close(descriptor)
        guard written == bytes.count, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }
}
