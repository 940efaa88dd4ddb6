import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Builds are hostile code: a build command run by a real agent (as root, with a build user) tries to read
/// the agent's secrets, to publish them through links in its results, to signal the agent and to leave a
/// process behind. Every attempt fails, the build still reports, and the next build sees none of it.
@Suite(.serialized, .timeLimit(.minutes(5))) struct AgentIsolationTests {
    /// The processes whose command line contains `marker`.
    static func processes(containing marker: String) -> [String] {
        var found: [String] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
            guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let text = String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
            if text.contains(marker) && !text.contains("AgentIsolationTests") { found.append("\(entry): \(text)") }
        }
        return found
    }

    @Test func aHostileBuildReachesNothingOfTheAgentAndLeavesNothingBehind() async throws {
        try #require(geteuid() == 0, "the agent switches to a build user only as root (CI runs the tests as root)")
        let farm = try await FarmHarness.make(tls: true)
        try await closing(farm) {
            try await farm.store.addNobleProcessors(["amd64"])
            try await farm.store.addBuilder(name: "hostile", processors: ["amd64"])
            try await farm.startMaster()
            // Stand-ins for the machine's secrets: root's, mode 0600, each with a sentinel a leak would show.
            let secrets = farm.directory + "/etc-buildd"
            try FileManager.default.createDirectory(atPath: secrets, withIntermediateDirectories: true)
            let sentinel = "SENTINEL-\(randomHexToken(bytes: 6))"
            let masterEnv = secrets + "/master.env"
            try "BUILDD_DATABASE_URL=postgresql://buildd:\(sentinel)@db/buildd\n".write(toFile: masterEnv, atomically: true,
                                                                                      encoding: .utf8)
            chmod(masterEnv, 0o600)
            chmod(secrets, 0o700)
            let marker = "leftover-\(randomHexToken(bytes: 4))"
            let script = farm.directory + "/hostile.sh"
            let workdir = farm.directory + "/work-hostile"
            try farm.startAgent("hostile", processors: ["amd64"], agentSettings: "build_user = nobody",
                                commands: "command = /bin/sh \(script) {results}")
            let agentPID = try #require(farm.agents["hostile"]?.processIdentifier)
            try """
                r=$1
                report=$r/report.txt
                attempt() { if "$@" >/dev/null 2>&1; then echo "ALLOWED $*" >> "$report"; else echo "refused $*" >> "$report"; fi; }
                if [ "$BUILDD_SOURCE" = second ]; then
                    # The next build on this agent: is anything of the first one still running?
                    if grep -qs '\(marker.dropLast())[\(marker.last!)]' /proc/[0-9]*/cmdline; then echo "leftover: found"; else echo "leftover: none"; fi
                    # Its results folder replaced by a link to the secrets.
                    rm -rf "$r" && ln -s \(secrets) "$r"
                    exit 0
                fi
                attempt cat \(farm.directory)/hostile.secret
                attempt cat \(workdir)/agent-state.json
                attempt cat \(masterEnv)
                attempt ls \(workdir)/logs
                attempt kill -0 \(agentPID)
                attempt kill -TERM \(agentPID)
                # A descriptor of the agent's (its broker socket, say) inherited by the build?
                if ls -l /proc/$$/fd | grep -q 'socket:'; then echo "ALLOWED an inherited socket" >> "$report"; else echo "refused an inherited socket" >> "$report"; fi
                ln -s \(farm.directory)/hostile.secret "$r/secret-link.txt"
                ln -s \(masterEnv) "$r/master-env.deb"
                ln -s \(workdir)/agent-state.json "$r/state-link.buildinfo"
                # A process left behind, out of the build's process group and session, its environment cleared.
                setsid env -i /bin/sh -c 'while :; do sleep 1; done' \(marker) </dev/null >/dev/null 2>&1 &
                sleep 0.5
                echo done >> "$report"
                """.write(toFile: script, atomically: true, encoding: .utf8)

            let first = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                 sourceName: "first", sourceVersion: "1.0", buildType: "command"))
            let reported = try await eventually(timeout: .seconds(60)) {
                try await farm.store.build(first).build.status == .fullyBuilt
            }
            let firstHistory = try await farm.store.build(first).history.map { $0.message ?? "" }
            #expect(reported, "the hostile build still reports: \(firstHistory)")
            let detail = try await farm.store.build(first)
            #expect(detail.files.filter { $0.kind == "result" }.map(\.name) == ["report.txt"], "only the regular file is taken")
            let report = try String(contentsOfFile: farm.artifactRoot + "/sha256/" + {
                let sha = detail.files.first { $0.name == "report.txt" }?.sha256 ?? "00"
                return "\(sha.prefix(2))/\(sha)"
            }(), encoding: .utf8)
            #expect(report.contains("done") && !report.contains("ALLOWED"), "\(report)")
            #expect(report.split(separator: "\n").filter { $0.hasPrefix("refused") }.count == 7, "\(report)")
            // The log says what was refused, and no stored file holds a secret.
            let logFile = try #require(detail.files.first { $0.kind == "log" })
            let log = try String(contentsOfFile: farm.artifactRoot + "/sha256/\(logFile.sha256.prefix(2))/\(logFile.sha256)",
                                 encoding: .utf8)
            for name in ["secret-link.txt", "master-env.deb", "state-link.buildinfo"] {
                #expect(log.contains("refused \(name)"), "\(log)")
            }
            for file in detail.files {
                let text = (try? String(contentsOfFile: farm.artifactRoot + "/sha256/\(file.sha256.prefix(2))/\(file.sha256)",
                                        encoding: .utf8)) ?? ""
                #expect(!text.contains(sentinel), "\(file.name) holds a secret")
            }
            // Nothing it started outlived it, and the agent is unharmed.
            #expect(try await eventually(timeout: .seconds(10)) { Self.processes(containing: marker).isEmpty },
                    "left behind: \(Self.processes(containing: marker))")
            #expect(farm.agents["hostile"]?.isRunning == true)

            // The next build on the same agent sees none of it, and a results folder that is a link is refused.
            let second = try await farm.store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                                  sourceName: "second", sourceVersion: "1.0", buildType: "command"))
            #expect(try await eventually(timeout: .seconds(60)) {
                !(try await farm.store.build(second).build.status.isActive)
            })
            let next = try await farm.store.build(second)
            #expect(next.files.filter { $0.kind == "result" }.isEmpty, "nothing is taken through a linked results folder")
            let nextLog = try #require(next.files.first { $0.kind == "log" })
            let nextText = try String(contentsOfFile: farm.artifactRoot + "/sha256/\(nextLog.sha256.prefix(2))/\(nextLog.sha256)",
                                      encoding: .utf8)
            #expect(nextText.contains("refused the results folder itself"), "\(nextText)")
            #expect(nextText.contains("leftover: none"), "the next build saw the first one's process: \(nextText)")
            #expect(!nextText.contains(sentinel))
        }
    }
}
