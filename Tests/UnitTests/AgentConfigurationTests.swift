@testable import BuilddAgent
import Foundation
import Testing

@Suite(.timeLimit(.minutes(1))) struct AgentConfigurationTests {
    let valid = """
        # an agent
        [agent]
        name = bld-amd64-01
        processors = amd64, i386
        workdir = /srv/buildd
        heartbeat = 3

        [broker]
        url = amqp://bld-amd64-01@broker:5672/buildd
        password_file = /etc/buildd/secret

        [master]
        url = https://master:8443/

        [commands]
        ; the real thing
        binarypackage = /usr/bin/sbuild-wrapper
        command = cd src; make check # tests
        """

    func secrets(_ path: String) -> String? { path == "/etc/buildd/secret" ? "hunter2\n" : nil }

    @Test func readsEverySetting() throws {
        let configuration = try AgentConfiguration.parse(valid, readFile: secrets)
        #expect(configuration.name == "bld-amd64-01")
        #expect(configuration.processors == ["amd64", "i386"])
        #expect(configuration.workDirectory == "/srv/buildd")
        #expect(configuration.heartbeatSeconds == 3)
        #expect(configuration.brokerURL.password == "hunter2")
        #expect(configuration.brokerUser == "bld-amd64-01")
        #expect(configuration.masterURLs == ["https://master:8443"])
        #expect(configuration.commands == ["binarypackage": "/usr/bin/sbuild-wrapper",
                                           "command": "cd src; make check # tests"])
        #expect(!configuration.brokerURL.description.contains("hunter2"))
    }

    @Test func aBrokerClusterIsEveryNodesURLWithThePasswordGivenOnce() throws {
        let text = valid.replacingOccurrences(of: "url = amqp://bld-amd64-01@broker:5672/buildd",
                                              with: "url = amqp://bld-amd64-01@rmq1:5672/buildd, amqp://bld-amd64-01@rmq2:5672/buildd")
        let configuration = try AgentConfiguration.parse(text, readFile: secrets)
        #expect(configuration.brokerNodes.map(\.host) == ["rmq1", "rmq2"])
        #expect(configuration.brokerNodes.allSatisfy { $0.password == "hunter2" })
        #expect(configuration.brokerURL.host == "rmq1")
        // The file text reads back the same.
        #expect(try AgentConfiguration.parse(configuration.fileText, readFile: secrets).brokerNodes.map(\.host) == ["rmq1", "rmq2"])
        let mixed = valid.replacingOccurrences(of: "url = amqp://bld-amd64-01@broker:5672/buildd",
                                               with: "url = amqp://bld-amd64-01@rmq1:5672/buildd, amqp://other@rmq2:5672/buildd")
        #expect(throws: AgentConfiguration.Invalid.self) { try AgentConfiguration.parse(mixed, readFile: secrets) }
        let none = valid.replacingOccurrences(of: "url = amqp://bld-amd64-01@broker:5672/buildd", with: "url = ,")
        #expect(throws: AgentConfiguration.Invalid(problems: ["[broker] url names no broker"])) {
            try AgentConfiguration.parse(none, readFile: secrets)
        }
    }

    /// A plain builder takes the shared queues (the default); any other is told so and takes only what is
    /// addressed to it; the setting survives the file's text.
    @Test func sharedQueueIsTheDefaultAndCanBeTurnedOff() throws {
        #expect(try AgentConfiguration.parse(valid, readFile: secrets).sharedQueue)
        let addressed = try AgentConfiguration.parse(valid.replacingOccurrences(of: "[agent]\n", with: "[agent]\nshared_queue = false\n"),
                                                     readFile: secrets)
        #expect(!addressed.sharedQueue)
        #expect(addressed.fileText.contains("shared_queue = false"))
        #expect(throws: AgentConfiguration.Invalid(problems: ["[agent] shared_queue must be true or false"])) {
            try AgentConfiguration.parse(valid.replacingOccurrences(of: "[agent]\n", with: "[agent]\nshared_queue = maybe\n"),
                                         readFile: secrets)
        }
    }

    @Test func environmentOverridesTheFile() throws {
        let configuration = try AgentConfiguration.parse(valid, environment: [
            "BUILDD_AGENT_AGENT_HEARTBEAT": "9", "BUILDD_AGENT_BROKER_PASSWORD": "fromenv",
        ], readFile: secrets)
        #expect(configuration.heartbeatSeconds == 9)
        #expect(configuration.brokerURL.password == "fromenv")
    }

    @Test func saysExactlyWhatIsWrong() {
        let broken = """
            [agent]
            name = Bad Name
            heartbeat = 0
            colour = blue
            [broker]
            url = amqp://u:inline@broker/
            [nonsense]
            """
        do {
            _ = try AgentConfiguration.parse(broken, readFile: secrets)
            Issue.record("a broken configuration was accepted")
        } catch let invalid as AgentConfiguration.Invalid {
            let problems = invalid.problems.joined(separator: "\n")
            #expect(problems.contains("line 7: unknown section [nonsense]"))
            #expect(problems.contains("[agent] name 'Bad Name' is not a valid builder name"))
            #expect(problems.contains("[agent] processors is required"))
            #expect(problems.contains("[agent] heartbeat must be 1-60 seconds"))
            #expect(problems.contains("[agent] unknown key 'colour'"))
            #expect(problems.contains("[broker] url must not contain the password"))
            #expect(problems.contains("[master] url is required"))
            #expect(problems.contains("[commands] needs at least one build type"))
            #expect(!problems.contains("inline"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func plainHTTPNeedsToBeAskedForAndIsWarnedAbout() throws {
        let plain = valid.replacingOccurrences(of: "https://master:8443/", with: "http://master:8080/")
        #expect(throws: AgentConfiguration.Invalid(problems: [
            "[master] url 'http://master:8080' is plain http: use https://, or set insecure_http = true to send tokens, sources and results in clear",
        ])) { try AgentConfiguration.parse(plain, readFile: secrets) }
        let allowed = try AgentConfiguration.parse(plain.replacingOccurrences(of: "[master]\n", with: "[master]\ninsecure_http = true\n"),
                                                   readFile: secrets)
        #expect(allowed.insecureHTTP && allowed.masterURLs == ["http://master:8080"])
        #expect(allowed.warnings.contains { $0.hasPrefix("[master] http://master:8080 is plain http") })
        // Plain amqp:// is allowed and warned about; amqps:// is not.
        #expect(allowed.warnings.contains { $0.hasPrefix("[broker] plain amqp://") })
        let secure = try AgentConfiguration.parse(valid.replacingOccurrences(of: "amqp://bld-amd64-01@broker:5672/",
                                                                             with: "amqps://bld-amd64-01@broker:5671/"),
                                                  readFile: secrets)
        #expect(secure.warnings.isEmpty, "\(secure.warnings)")
        #expect(throws: AgentConfiguration.Invalid(problems: ["[master] url 'ftp://m' must be an https:// URL"])) {
            try AgentConfiguration.parse(valid.replacingOccurrences(of: "https://master:8443/", with: "ftp://m"), readFile: secrets)
        }
    }

    @Test func anAgentWithoutABrokerPasswordOrUserIsRefused() {
        let noPassword = valid.replacingOccurrences(of: "password_file = /etc/buildd/secret\n", with: "")
        #expect(throws: AgentConfiguration.Invalid(problems: [
            "[broker] no password: set password_file (or BUILDD_AGENT_BROKER_PASSWORD); an agent never logs in as guest",
        ])) { try AgentConfiguration.parse(noPassword, readFile: secrets) }
        let noUser = valid.replacingOccurrences(of: "amqp://bld-amd64-01@broker", with: "amqp://broker")
        #expect(throws: AgentConfiguration.Invalid(problems: [
            "[broker] url needs the agent's own broker user (amqps://NAME@host/vhost)",
        ])) { try AgentConfiguration.parse(noUser, readFile: secrets) }
    }

    @Test func aCAFileThatCannotBeReadIsReported() {
        let text = valid.replacingOccurrences(of: "[master]\n", with: "[master]\nca_file = /nowhere.pem\n")
        #expect(throws: AgentConfiguration.Invalid(problems: ["[master] ca_file /nowhere.pem cannot be read"])) {
            try AgentConfiguration.parse(text, readFile: secrets)
        }
    }

    @Test func unreadableSecretFileIsReported() {
        let text = valid.replacingOccurrences(of: "/etc/buildd/secret", with: "/nowhere")
        #expect(throws: AgentConfiguration.Invalid(problems: ["[broker] password_file /nowhere cannot be read"])) {
            try AgentConfiguration.parse(text, readFile: secrets)
        }
    }
}

/// `fileText` writes a configuration as the file it parses from (the fuzz target checks this on any input).
@Suite(.timeLimit(.minutes(1))) struct AgentConfigurationFileTextTests {
    @Test(arguments: [
        "[agent]\nname = a1\nprocessors = amd64, arm64\nworkdir =;odd\nbuild_user =#x\n[broker]\nurl = amqp://us%40er@[::1]:5673/v%2Fh?cacert=/x%20y\npassword_file = /s\n[master]\nurl = http://m1:8080/, http://m2:8080\ninsecure_http = true\n[commands]\nbinarypackage = sbuild {dsc} ; not a comment here\n",
        "[agent]\nname = b\nprocessors = riscv64\nkeep_workdir = yes\nbuild_timeout = 0\n[broker]\nurl = amqps://b@h/\nqueue_type = quorum\npassword_file = /s\n[master]\nurl = https://h:1\nca_file = /ca.pem\n[commands]\ncommand = true\n",
    ])
    func roundTrips(text: String) throws {
        let environment = ["BUILDD_AGENT_BROKER_PASSWORD": "pw"]
        let parsed = try AgentConfiguration.parse(text, environment: environment, readFile: { _ in "secret" })
        let again = try AgentConfiguration.parse(parsed.fileText, environment: environment, readFile: { _ in "secret" })
        #expect(again == parsed, "\(parsed.fileText)")
        #expect(!parsed.fileText.contains("pw"), "the password is never written out")
    }
}
