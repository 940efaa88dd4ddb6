@testable import BuilddAgent
import Testing

@Suite(.timeLimit(.minutes(1))) struct CommandTemplateTests {
    @Test func fillsPlaceholdersShellQuoted() throws {
        let command = try CommandTemplate.render("sbuild --dist={series} --arch={arch} {dsc}",
                                                 values: ["series": "noble", "arch": "amd64", "dsc": "hello_2.10-3.dsc"])
        #expect(command == "sbuild --dist='noble' --arch='amd64' 'hello_2.10-3.dsc'")
    }

    @Test func aValueCannotInjectShell() throws {
        let command = try CommandTemplate.render("echo {source}", values: ["source": "x'; rm -rf / #"])
        #expect(command == #"echo 'x'\''; rm -rf / #'"#)
    }

    @Test func bracesAndErrors() throws {
        #expect(try CommandTemplate.render("awk '{{print $1}}' {results}", values: ["results": "/r"]) == "awk '{print $1}' '/r'")
        #expect(throws: CommandTemplate.Invalid.self) { try CommandTemplate.render("make {target}", values: [:]) }
        #expect(throws: CommandTemplate.Invalid(description: "unclosed { in command")) {
            try CommandTemplate.render("echo {source", values: [:])
        }
    }

    @Test func checkConfigReportsABadTemplate() {
        let text = """
            [agent]
            name = a
            processors = amd64
            [broker]
            url = amqp://a@broker/
            [master]
            url = http://m:8080
            [commands]
            binarypackage = sbuild {distro}
            """
        do {
            _ = try AgentConfiguration.parse(text)
            Issue.record("accepted an unknown placeholder")
        } catch let invalid as AgentConfiguration.Invalid {
            #expect(invalid.problems.contains { $0.hasPrefix("[commands] binarypackage: unknown placeholder {distro}") },
                    "\(invalid.problems)")
        } catch {
            Issue.record("\(error)")
        }
    }
}
