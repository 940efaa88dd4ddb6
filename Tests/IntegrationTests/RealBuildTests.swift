import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Real Debian builds through an agent: GNU hello fetched from the Debian archive this machine's apt uses,
/// built by `deploy/examples/binarypackage` in a fresh root unpacked from a real chroot tarball (mmdebstrap,
/// made once per run by `deploy/localfarm test`: `BUILDD_TEST_CHROOT`); a package whose build fails and one
/// with a build dependency no archive has. Needs root (the build command unpacks, mounts and chroots).
@Suite(.serialized, .timeLimit(.minutes(10))) struct RealBuildTests {
    struct NeedsRoot: Error, CustomStringConvertible {
        var description: String { "real builds need root (the build command unpacks a root, mounts /proc and chroots)" }
    }

    /// Runs a host program; fails the test with its output when it does not exit 0.
    @discardableResult
    static func host(_ arguments: String..., directory: String? = nil, timeout: Duration = .seconds(120)) async throws -> String {
        var command = arguments
        if let directory { command = ["/usr/bin/env", "-C", directory] + arguments }
        let result = try await FarmHarness.run(command[0], Array(command.dropFirst()), timeout: timeout)
        #expect(result.status == 0, "\(arguments.joined(separator: " ")) exited \(result.status):\n\(result.output)\n\(result.error)")
        return result.output + result.error
    }

    /// A farm with debian/bookworm/amd64, its chroot registered, and builder `builder` added (its agent
    /// not started yet: `startRealAgent`).
    static func withRealFarm(builder: String, _ body: (FarmHarness, String) async throws -> Void) async throws {
        let chroot = try TestEnvironment.value("BUILDD_TEST_CHROOT")
        guard geteuid() == 0 else { throw NeedsRoot() }
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            try await farm.store.addProcessor("amd64")
            try await farm.store.addArchSeries(distribution: "debian", series: "bookworm", archTag: "amd64", processor: "amd64")
            try await farm.store.addBuilder(name: builder, processors: ["amd64"], brokerUser: "guest")
            // One agent takes the builds one after another, and a job waits in its queue while hello builds (about
            // 40 s alone, over a minute beside the rest of the suite): the accept timeout must outlast that, or the
            // waiting build is requeued and ends at attempt 2.
            try await farm.startMaster(lease: 120, acceptTimeout: 600)
            let registered = try await farm.cli("archseries", "chroot", "debian/bookworm/amd64", chroot,
                                                "--artifacts", farm.artifactRoot)
            #expect(registered.status == 0, "archseries chroot: \(registered.error)")
            try await body(farm, chroot)
        }
    }

    /// The agent of a builder for real builds: `binarypackage` starts as root.
    static func startRealAgent(_ farm: FarmHarness, _ name: String) throws {
        try farm.startAgent(name, processors: ["amd64"], agentSettings: "privileged_commands = binarypackage",
                            commands: "binarypackage = \(FarmHarness.repositoryFile("deploy/examples/binarypackage"))")
    }

    @Test func anAgentBuildsHelloFromTheArchiveAndRealFailuresEndAsLaunchpadSays() async throws {
        try await Self.withRealFarm(builder: "real-1") { farm, chroot in
            let store = farm.store

            // hello from the archive; the two test packages from their sources in the checkout.
            let hello = try await farm.cli("build", "submit", "debian/bookworm/amd64", "hello", "2.10-3", "--from-archive",
                                           "--artifacts", farm.artifactRoot, "--urgency", "high")
            #expect(hello.status == 0, "submit --from-archive: \(hello.error)")
            let helloID = try #require(Int64(hello.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            let sources = farm.directory + "/sources"
            try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
            var ids: [String: Int64] = [:]
            // The dependency-wait package comes signed, and is checked against the signer's keyring (gpgv).
            let gnupg = farm.directory + "/gnupg"
            try FileManager.default.createDirectory(atPath: gnupg, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try await Self.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--passphrase", "",
                                "--quick-gen-key", "buildd test <test@localhost>", "ed25519", "sign", "never")
            let keyring = farm.directory + "/signer.gpg"
            try await Self.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--yes", "--output", keyring, "--export")
            for name in ["buildd-test-fails", "buildd-test-depwait"] {
                try await Self.host("/usr/bin/dpkg-source", "-b", FarmHarness.repositoryFile("deploy/examples/packages/\(name)"),
                                    directory: sources)
                var checks: [String] = []
                if name == "buildd-test-depwait" {
                    let dsc = "\(sources)/\(name)_1.0.dsc"
                    // Unsigned, it is refused when a keyring is given.
                    let unsigned = try await farm.cli("build", "submit", "debian/bookworm/amd64", name, "1.0", "--dsc", dsc,
                                                      "--keyring", keyring, "--artifacts", farm.artifactRoot)
                    #expect(unsigned.status != 0 && unsigned.error.contains("signature not valid"), "\(unsigned.error)")
                    try await Self.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--yes",
                                        "--clearsign", "--output", dsc + ".signed", dsc)
                    try FileManager.default.removeItem(atPath: dsc)
                    try FileManager.default.moveItem(atPath: dsc + ".signed", toPath: dsc)
                    // Signed, but not by a key of the keyring given: refused.
                    let stranger = try await farm.cli("build", "submit", "debian/bookworm/amd64", name, "1.0", "--dsc", dsc,
                                                      "--keyring", "/usr/share/keyrings/debian-archive-keyring.gpg",
                                                      "--artifacts", farm.artifactRoot)
                    #expect(stranger.status != 0 && stranger.error.contains("signature not valid"), "\(stranger.error)")
                    checks = ["--keyring", keyring]
                }
                let submitted = try await farm.cli(["build", "submit", "debian/bookworm/amd64", name, "1.0",
                                                    "--dsc", "\(sources)/\(name)_1.0.dsc", "--artifacts", farm.artifactRoot] + checks)
                #expect(submitted.status == 0, "submit --dsc \(name): \(submitted.error)")
                ids[name] = Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            // A .dsc whose files do not match it is refused, and nothing is queued.
            let tampered = farm.directory + "/tampered"
            try FileManager.default.createDirectory(atPath: tampered, withIntermediateDirectories: true)
            for file in try FileManager.default.contentsOfDirectory(atPath: sources) where file.hasPrefix("buildd-test-fails_") {
                try FileManager.default.copyItem(atPath: "\(sources)/\(file)", toPath: "\(tampered)/\(file)")
            }
            let tarball = try #require(try FileManager.default.contentsOfDirectory(atPath: tampered).first { $0.hasSuffix(".tar.xz") })
            // One byte changed, the size kept: only the SHA-256 can tell.
            var bytes = try Data(contentsOf: URL(fileURLWithPath: "\(tampered)/\(tarball)"))
            bytes[bytes.count / 2] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: "\(tampered)/\(tarball)"))
            let refused = try await farm.cli("build", "submit", "debian/bookworm/amd64", "buildd-test-fails", "1.0",
                                             "--dsc", "\(tampered)/buildd-test-fails_1.0.dsc", "--artifacts", farm.artifactRoot)
            #expect(refused.status != 0 && refused.error.contains("does not match the .dsc"), "\(refused.error)")
            #expect(try await store.builds(statuses: [], processor: nil, limit: 10).count == 3)

            try Self.startRealAgent(farm, "real-1")
            // hello's page in a browser while dpkg-buildpackage runs: the log grows on the page, which follows it to
            // the build's end and then shows the .deb (the operator's pages on a real build).
            #expect(try await eventually(timeout: .seconds(120)) { try await store.build(helloID).build.status == .building })
            let page = try await HeadlessBrowser(url: farm.masterURLs[0] + "/builds/\(helloID)")
            try await closing(page) {
                #expect(try await page.waitForText(["Build #\(helloID): hello 2.10-3", "BUILDING"]).0)
                func lines() async throws -> Int {
                    (try await page.evaluate("document.getElementById('log').textContent.split('\\n').length") as? Int) ?? -1
                }
                let first = try await lines()
                #expect(try await eventually(timeout: .seconds(120)) { try await lines() > first + 20 },
                        "the real build's log grew on the page (from \(first) lines)")
                let (ended, text) = try await page.waitForText(["FULLYBUILT", "hello_2.10-3_amd64.deb",
                                                                "The build has ended: this is its whole log."], timeout: .seconds(300))
                #expect(ended, "the page followed hello to its end:\n\(text.suffix(2000))")
                #expect(text.contains("dpkg-buildpackage"), "the page shows the real build's log")
            }
            let quiet = try await farm.waitForQuiet(timeout: .seconds(480))
            #expect(quiet, "builds still active; agent log:\n\(farm.log("real-1"))")

            // hello built, with its .deb, .buildinfo and .changes and the log.
            let built = try await store.build(helloID)
            #expect(built.build.status == .fullyBuilt, "hello: \(built.history)")
            #expect(built.build.attempt == 1, "built at the first attempt: \(built.history)")
            let results = built.files.filter { $0.kind == "result" }.map(\.name).sorted()
            #expect(results.contains("hello_2.10-3_amd64.deb"))
            #expect(results.contains("hello_2.10-3_amd64.buildinfo"))
            #expect(results.contains("hello_2.10-3_amd64.changes"))
            let log = try #require(built.files.first { $0.kind == "log" })
            let logText = try String(contentsOfFile: ArtifactStore(root: farm.artifactRoot).path(sha256: log.sha256), encoding: .utf8)
            #expect(logText.contains("dpkg-buildpackage -b"), "the log is the build's")

            // The .deb, as the master serves it, is a real package that installs and runs.
            let deb = farm.directory + "/hello_2.10-3_amd64.deb"
            let download = try await runBlocking { [masterURL = farm.masterURLs[0]] in
                try SimpleHTTPClient.download(url: "\(masterURL)/v1/builds/\(helloID)/files/hello_2.10-3_amd64.deb",
                                              to: deb, maxBytes: 10 << 20)
            }
            #expect(download.status == 200)
            #expect(try await Self.host("/usr/bin/dpkg-deb", "--info", deb).contains("Package: hello"))
            #expect(try await Self.host("/usr/bin/dpkg-deb", "--contents", deb).contains("./usr/bin/hello"))
            let root = farm.directory + "/install-root"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try await Self.host("/bin/tar", "-xf", chroot, "-C", root)
            try FileManager.default.copyItem(atPath: deb, toPath: root + "/hello.deb")
            try await Self.host("/usr/sbin/chroot", root, "/usr/bin/dpkg", "-i", "/hello.deb")
            #expect(try await Self.host("/usr/sbin/chroot", root, "/usr/bin/hello").contains("Hello, world!"))
            try? FileManager.default.removeItem(atPath: root)

            // A real build failure and a real dependency wait, as Launchpad ends them.
            let failed = try await store.build(try #require(ids["buildd-test-fails"]))
            #expect(failed.build.status == .failedToBuild, "\(failed.history)")
            #expect(failed.build.attempt == 1, "a package that fails to build is not retried")
            let waiting = try await store.build(try #require(ids["buildd-test-depwait"]))
            #expect(waiting.build.status == .manualDepWait, "\(waiting.history)")
            #expect(waiting.history.contains { ($0.message ?? "").contains("missing dependencies: buildd-no-such-package (>= 1.0)") },
                    "the missing relation is recorded: \(waiting.history)")
            let depPage = try await HeadlessBrowser(url: farm.masterURLs[0] + "/builds/\(waiting.build.id)")
            try await closing(depPage) {
                let (shown, text) = try await depPage.waitForText(["MANUALDEPWAIT", "Missing", "buildd-no-such-package (>= 1.0)"])
                #expect(shown, "the dep-wait build's page names what it misses:\n\(text)")
            }

            // A chroot that does not unpack is the root's failure, not the package's: CHROOTWAIT, with the
            // reason in the log.
            try await store.addArchSeries(distribution: "debian", series: "trixie", archTag: "amd64", processor: "amd64")
            let garbage = farm.directory + "/garbage.tar.zst"
            try Data("this is not a tarball\n".utf8).write(to: URL(fileURLWithPath: garbage))
            #expect(try await farm.cli("archseries", "chroot", "debian/trixie/amd64", garbage, "--artifacts", farm.artifactRoot).status == 0)
            let broken = try await store.submit(BuildRequest(distribution: "debian", series: "trixie", archTag: "amd64",
                                                             sourceName: "hello", sourceVersion: "2.10-3"))
            let waited = try await eventually(timeout: .seconds(120)) { try await store.build(broken).build.status == .chrootWait }
            let brokenHistory = try await store.build(broken).history
            #expect(waited, "\(brokenHistory)")
            let brokenLog = try #require(try await store.build(broken).files.first { $0.kind == "log" })
            #expect(try String(contentsOfFile: ArtifactStore(root: farm.artifactRoot).path(sha256: brokenLog.sha256), encoding: .utf8)
                .contains("the chroot tarball did not unpack"))

            // Nothing of a build is left behind: no build folder, no mount under the agent's folder.
            let work = farm.directory + "/work-real-1"
            let left = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasPrefix("build-") }
            #expect(left.isEmpty, "build folders left: \(left)")
            let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
            #expect(!mounts.contains(work), "mounts left under \(work)")
            // The chroot is cached for the next build, by its digest, with the tree the builds' overlays
            // share as their read-only lower layer (never written: each build writes its own upper layer).
            let cached = try FileManager.default.contentsOfDirectory(atPath: work + "/chroots").sorted()
            #expect(cached.count == 3 && cached.contains { $0.hasSuffix("-garbage.tar.zst") }, "\(cached)")
            let good = try #require(cached.first { $0.hasSuffix("-chroot-debian-bookworm-amd64.tar.zst") })
            #expect(cached.contains(good + ".root"), "\(cached)")
            #expect(!FileManager.default.fileExists(atPath: work + "/chroots/\(good).root/build"),
                    "a build wrote into the shared lower layer")
        }
    }

    /// Whether something listens at `host:port`, from the host's network.
    static func answers(_ host: String, _ port: Int) -> Bool {
        guard let descriptor = try? SimpleHTTPClient.connect(host: host, port: port, timeoutSeconds: 5) else { return false }
        close(descriptor)
        return true
    }

    @Test func aPackageBuildReachesNoMasterBrokerOrDatabase() async throws {
        try await Self.withRealFarm(builder: "real-3") { farm, _ in
            // The farm's own services, as the host reaches them: each answers from here.
            let database = try #require(URLComponents(string: farm.database.url)?.port)
            let broker = try #require(URLComponents(string: farm.vhost.brokerURL)?.port)
            let targets = [("127.0.0.1", farm.masters[0].port), ("127.0.0.1", database), ("127.0.0.1", broker)]
            for (host, port) in targets { #expect(Self.answers(host, port), "\(host):\(port) does not answer the host") }
            // A package whose build step fails if it can open a connection to any of them.
            let sources = farm.directory + "/offline"
            try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
            try await Self.host("/bin/cp", "-r", FarmHarness.repositoryFile("deploy/examples/packages/buildd-test-offline"),
                                sources + "/buildd-test-offline")
            try targets.map { "\($0.0):\($0.1)" }.joined(separator: "\n").appending("\n")
                .write(toFile: sources + "/buildd-test-offline/debian/targets", atomically: true, encoding: .utf8)
            try await Self.host("/usr/bin/dpkg-source", "-b", "buildd-test-offline", directory: sources)
            let submitted = try await farm.cli("build", "submit", "debian/bookworm/amd64", "buildd-test-offline", "1.0",
                                               "--dsc", sources + "/buildd-test-offline_1.0.dsc", "--artifacts", farm.artifactRoot)
            let id = try #require(Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(submitted.error)")
            try Self.startRealAgent(farm, "real-3")
            let ended = try await eventually(timeout: .seconds(300)) { !(try await farm.store.build(id).build.status.isActive) }
            let built = try await farm.store.build(id)
            #expect(ended && built.build.status == .fullyBuilt, "\(built.history)")
            let log = try #require(built.files.first { $0.kind == "log" })
            let text = try String(contentsOfFile: ArtifactStore(root: farm.artifactRoot).path(sha256: log.sha256), encoding: .utf8)
            for (host, port) in targets { #expect(text.contains("no route to \(host):\(port)"), "\(host):\(port): \(text.suffix(3000))") }
        }
    }

    /// The processes whose root is under `folder` (a build's root).
    static func processesRooted(under folder: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let root = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/root") else { return false }
            return root.hasPrefix(folder)
        }
    }

    @Test func cancellingARealBuildKillsEveryProcessInItsRootAndLeavesNothing() async throws {
        try await Self.withRealFarm(builder: "real-2") { farm, _ in
            let store = farm.store
            let hello = try await farm.cli("build", "submit", "debian/bookworm/amd64", "hello", "2.10-3", "--from-archive",
                                           "--artifacts", farm.artifactRoot)
            let id = try #require(Int64(hello.output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(hello.error)")
            try Self.startRealAgent(farm, "real-2")
            let work = farm.directory + "/work-real-2"
            // Cancelled once the build runs inside its root (processes whose root is there).
            let inside = try await eventually(timeout: .seconds(180)) {
                !Self.processesRooted(under: work + "/build-").isEmpty
            }
            #expect(inside, "the build never ran in its root: \(farm.log("real-2"))")
            #expect(try await farm.cli("build", "cancel", "\(id)").status == 0)
            let cancelled = try await eventually(timeout: .seconds(60)) {
                (try? await store.build(id).build.status) == .cancelled
            }
            let history = try await store.build(id).history
            #expect(cancelled, "\(history)")
            let gone = try await eventually(timeout: .seconds(30)) {
                Self.processesRooted(under: work).isEmpty
                    && !((try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []).contains { $0.hasPrefix("build-") }
            }
            let folder = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            #expect(gone, "left behind: processes \(Self.processesRooted(under: work)), folder \(folder)")
            let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
            #expect(!mounts.contains(work), "mounts left under \(work)")
        }
    }
}
