import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// Archives on real services (``ArchiveDependencies``): a job carries the apt sources its build needs,
/// expanded by pocket and component, with each archive's signing key; launchpad-buildd builders get them as
/// `archives`; and a real build installs a build dependency that only a local archive (served on loopback,
/// signed by a key made here) holds.
@Suite(.serialized, .timeLimit(.minutes(8))) struct ArchiveFarmTests {
    static let fakeKey = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZtest\n-----END PGP PUBLIC KEY BLOCK-----\n"

    /// A security-pocket build of universe for a PPA that depends on another: its job carries the PPA in
    /// release and security, the dependency, then the primary archive in updates with every component; the
    /// key files and the archive arguments reach the command; a private archive's build is private.
    @Test func aSecurityPocketJobCarriesTheExpandedSources() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "arch-1", processors: ["amd64"], brokerUser: "guest")
            let key = farm.directory + "/team.asc"
            try Self.fakeKey.write(toFile: key, atomically: true, encoding: .utf8)
            for arguments in [["ubuntu-main", "--url", "http://archive.example/ubuntu", "--primary", "ubuntu"],
                              ["tools", "--url", "http://ppa.example/tools"],
                              ["team", "--url", "https://ppa.example/team", "--key", key, "--depends-on", "tools:release:main",
                               "--build-debug-symbols"],
                              ["secret", "--url", "https://buildd:pw@private.example/secret", "--private"]] {
                let added = try await farm.cli(["archive", "add"] + arguments)
                #expect(added.status == 0, "\(arguments): \(added)")
            }
            let refused = try await farm.cli("archive", "add", "loop", "--url", "http://x.example", "--depends-on", "nowhere")
            #expect(refused.status != 0 && refused.error.contains("unknown archive 'nowhere'"), "\(refused)")
            let listed = try await farm.cli("archive", "list")
            #expect(listed.output.contains("secret  private PPA  https://***@private.example/secret")
                    && !listed.output.contains("pw@"), "\(listed)")
            // The command prints what the agent gave it: the sources, the keys and the archive arguments.
            try await farm.startMaster()
            try farm.startAgent("arch-1", processors: ["amd64"], commands: """
                showsources = cat "$BUILDD_APT_SOURCES" && ls "$BUILDD_APT_KEYS" && echo "suite=$BUILDD_SUITE private=$BUILDD_ARCHIVE_PRIVATE indep=$BUILDD_ARCH_INDEP debug=$BUILDD_BUILD_DEBUG_SYMBOLS"
                """)
            var request = BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: "fix",
                                       sourceVersion: "1.0", buildType: "showsources", pocket: .security, component: .universe)
            request.archiveName = "team"
            request.archIndep = true
            let build = try await store.submit(request)
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(build).build.status == .fullyBuilt
            }, "arch-1: \(farm.log("arch-1").suffix(1500))\nmaster: \(farm.log("master").suffix(1500))")
            let log = try await farm.cli("build", "log", "\(build)", "--artifacts", farm.artifactRoot)
            let expected = """
                deb [signed-by=/buildd/apt-keys/team.asc] https://ppa.example/team noble main restricted universe
                deb [signed-by=/buildd/apt-keys/team.asc] https://ppa.example/team noble-security main restricted universe
                deb http://ppa.example/tools noble main
                deb http://archive.example/ubuntu noble main restricted universe multiverse
                deb http://archive.example/ubuntu noble-security main restricted universe multiverse
                deb http://archive.example/ubuntu noble-updates main restricted universe multiverse
                team.asc
                suite=noble-security private=0 indep=1 debug=1
                """
            #expect(log.output.contains(expected), "\(log)")

            // launchpad-buildd gets the same sources as its `archives`, without the options.
            let details = try #require(try await store.legacyDispatchDetails(buildID: build))
            #expect(details.archives.first == "deb https://ppa.example/team noble main restricted universe"
                    && details.archives.count == 6 && details.archIndep && details.buildDebugSymbols, "\(details.archives)")

            // A build for the private archive is private (and so virtualized), whatever the submit said.
            var secret = BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64", sourceName: "hidden",
                                      sourceVersion: "1.0")
            secret.archiveName = "secret"
            secret.virtualized = false
            let hidden = try await store.build(try await store.submit(secret))
            #expect(hidden.build.archive == .private && hidden.requirements?.virtualized == true, "\(hidden.build)")
            // An archive that does not exist is a clear error, and nothing is queued.
            var unknown = secret
            unknown.archiveName = "nowhere"
            await #expect(throws: StoreError(.notFound, "unknown archive 'nowhere': add it with `archive add`")) {
                _ = try await store.submit(unknown)
            }
        }
    }

    /// A dependency wait ends by itself: the build keeps what it misses, the dep-wait pass reads its archive's
    /// index with conditional requests (an unchanged index is a 304) and retries it once, and only once, the
    /// index satisfies the relation (a version too old does not).
    @Test func aDepWaitBuildIsRetriedWhenTheIndexGainsItsDependencyAndNotBefore() async throws {
        let farm = try await FarmHarness.make()
        try await closing(farm) {
            let store = farm.store
            try await store.addNobleProcessors(["amd64"])
            try await store.addBuilder(name: "dw-1", processors: ["amd64"], brokerUser: "guest")
            let root = farm.directory + "/index"
            let lists = root + "/dists/noble/main/binary-amd64"
            try FileManager.default.createDirectory(atPath: lists, withIntermediateDirectories: true)
            func publish(_ version: String, at offset: TimeInterval) throws {
                try """
                    Package: libfoo-dev
                    Version: \(version)
                    Architecture: amd64
                    Multi-Arch: same

                    Package: make
                    Version: 4.3-4.1
                    Architecture: amd64

                    """.write(toFile: lists + "/Packages", atomically: true, encoding: .utf8)
                // Seconds apart, so the server's Last-Modified (whole seconds) tells the versions apart.
                try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(offset)],
                                                      ofItemAtPath: lists + "/Packages")
            }
            try publish("1.0-1", at: -60)
            let port = try FarmHarness.freePort()
            let requests = farm.directory + "/index-requests.log"
            FileManager.default.createFile(atPath: requests, contents: nil)
            let server = Process()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            server.arguments = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", root, "\(port)"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: requests))
            try server.run()
            // SIGKILL: the test process ignores SIGTERM, and its children inherit that.
            defer { Self.stop(server) }
            let added = try await farm.cli("archive", "add", "ubuntu-main", "--url", "http://127.0.0.1:\(port)",
                                           "--primary", "ubuntu")
            #expect(added.status == 0, "\(added)")
            try await farm.startMaster(arguments: ["--dep-wait-interval", "1"])
            try farm.startAgent("dw-1", processors: ["amd64"])
            let build = try await store.submit(BuildRequest(distribution: "ubuntu", series: "noble", archTag: "amd64",
                                                            sourceName: "needs-depwait", sourceVersion: "1.0"))
            #expect(try await eventually(timeout: .seconds(60)) {
                try await store.build(build).build.status == .manualDepWait
            }, "dw-1: \(farm.log("dw-1").suffix(1500))")
            #expect(try await store.dependencies(of: build) == "libfoo-dev (>= 2.0)")
            // libfoo-dev 1.0 does not satisfy it: passes go by, the index is read conditionally, nothing retried.
            #expect(try await eventually(timeout: .seconds(30)) {
                ((try? String(contentsOfFile: requests, encoding: .utf8)) ?? "").contains("Packages HTTP/1.1\" 304")
            }, "\((try? String(contentsOfFile: requests, encoding: .utf8)) ?? "")\nmaster: \(farm.log("master").suffix(1500))")
            let waited = try await store.build(build)
            #expect(waited.build.status == .manualDepWait && waited.build.attempt == 1, "\(waited.history)")
            let fullFetches = ((try? String(contentsOfFile: requests, encoding: .utf8)) ?? "")
                .components(separatedBy: "Packages HTTP/1.1\" 200").count - 1
            #expect(fullFetches == 1, "an unchanged index is fetched whole once: \(fullFetches)")

            // The archive gains libfoo-dev 2.1: the next pass retries the build, as the dep-wait job. With no agent
            // to take it, it waits, its missing relation gone.
            _ = await FarmHarness.stop(farm.agents["dw-1"]!)
            try publish("2.1-1", at: 0)
            #expect(try await eventually(timeout: .seconds(30)) {
                try await store.build(build).history.contains { $0.status == BuildStatus.needsBuild.rawValue && $0.actor == "dep-wait" }
            }, "master: \(farm.log("master").suffix(2000))")
            let retried = try await store.build(build)
            #expect(retried.build.status == .needsBuild && retried.dependencies == nil, "\(retried.history)")
            #expect(try await store.dependencies(of: build) == nil)
            // Back, the builder builds it again (and the stand-in misses the dependency again).
            try farm.startAgent("dw-1", processors: ["amd64"])
            #expect(try await eventually(timeout: .seconds(30)) { try await store.build(build).build.attempt >= 2 })
        }
    }

    /// A real build of a package whose build dependency no Debian archive has: with the local archive that
    /// holds it (served on loopback, its Release signed by a key made here), it builds.
    @Test func aRealBuildInstallsItsBuildDependencyFromALocalArchive() async throws {
        try await RealBuildTests.withRealFarm(builder: "real-arch") { farm, _ in
            let store = farm.store
            let archive = farm.directory + "/archive"
            let gnupg = farm.directory + "/archive-gnupg"
            try FileManager.default.createDirectory(atPath: gnupg, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            let port = try FarmHarness.freePort()
            let key = try await Self.makeLocalArchive(at: archive, gnupg: gnupg, farm: farm)
            let server = Process()
            server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            server.arguments = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", archive, "\(port)"]
            server.standardOutput = FileHandle.nullDevice
            server.standardError = FileHandle.nullDevice
            try server.run()
            // SIGKILL: the test process ignores SIGTERM, and its children inherit that.
            defer { Self.stop(server) }
            // The primary archive as the chroot has it; the local one depends on its release pocket only (Debian
            // keeps security updates elsewhere).
            for arguments in [["debian", "--url", "http://deb.debian.org/debian", "--primary", "debian"],
                              ["local", "--url", "http://127.0.0.1:\(port)", "--key", key, "--depends-on", "debian:release"]] {
                let added = try await farm.cli(["archive", "add"] + arguments)
                #expect(added.status == 0, "\(arguments): \(added)")
            }
            let sources = farm.directory + "/sources"
            try Self.makeSourcePackage(at: sources + "/buildd-test-archive")
            try await RealBuildTests.host("/usr/bin/dpkg-source", "-b", "buildd-test-archive", directory: sources)
            let submitted = try await farm.cli("build", "submit", "debian/bookworm/amd64", "buildd-test-archive", "1.0",
                                               "--dsc", "\(sources)/buildd-test-archive_1.0.dsc", "--in-archive", "local",
                                               "--artifacts", farm.artifactRoot)
            #expect(submitted.status == 0, "\(submitted)")
            let id = try #require(Int64(submitted.output.trimmingCharacters(in: .whitespacesAndNewlines)))
            try RealBuildTests.startRealAgent(farm, "real-arch")
            #expect(try await eventually(timeout: .seconds(400)) {
                try await store.build(id).build.status.isTerminalOrWaiting
            }, "real-arch: \(farm.log("real-arch").suffix(2000))")
            let log = try await farm.cli("build", "log", "\(id)", "--artifacts", farm.artifactRoot)
            #expect(try await store.build(id).build.status == .fullyBuilt, "\(log.output.suffix(4000))")
            #expect(log.output.contains("apt-get update (the job's apt sources)")
                    && log.output.contains("deb [signed-by=/buildd/apt-keys/local.asc] http://127.0.0.1:\(port) bookworm main")
                    && log.output.contains("buildd-no-such-package 1.0 is installed"), "\(log.output.prefix(6000))")
            let files = try await store.build(id).files.map(\.name)
            #expect(files.contains("buildd-test-archive_1.0_all.deb"), "\(files)")
        }
    }

    /// A source package (native, no debhelper: the chroot has build-essential only) whose build needs
    /// `buildd-no-such-package (>= 1.0)` and checks, offline, that it is installed.
    static func makeSourcePackage(at folder: String) throws {
        try FileManager.default.createDirectory(atPath: folder + "/debian/source", withIntermediateDirectories: true)
        let files = [
            "debian/source/format": "3.0 (native)\n",
            "debian/changelog": """
                buildd-test-archive (1.0) unstable; urgency=medium

                  * A test package for buildd's archives.

                 -- buildd developers <buildd@localhost>  Sun, 06 Dec 2026 12:00:00 +0000

                """,
            "debian/control": """
                Source: buildd-test-archive
                Section: misc
                Priority: optional
                Maintainer: buildd developers <buildd@localhost>
                Build-Depends: buildd-no-such-package (>= 1.0)
                Standards-Version: 4.6.2
                Rules-Requires-Root: no

                Package: buildd-test-archive
                Architecture: all
                Description: a package whose build dependency only a local archive has
                 buildd's archive test builds it against a local archive.

                """,
            "debian/rules": """
                #!/usr/bin/make -f
                build build-arch build-indep:
                \ttest -f /usr/share/buildd-no-such-package/present
                \t@echo "buildd-no-such-package $$(dpkg-query -W -f '$${Version}' buildd-no-such-package) is installed"

                binary binary-arch binary-indep: build
                \tmkdir -p debian/tmp/DEBIAN debian/tmp/usr/share/doc/buildd-test-archive
                \techo built > debian/tmp/usr/share/doc/buildd-test-archive/built
                \tdpkg-gencontrol -pbuildd-test-archive -Pdebian/tmp
                \tdpkg-deb --build debian/tmp ..

                clean:
                \trm -rf debian/tmp debian/files debian/substvars

                .PHONY: build build-arch build-indep binary binary-arch binary-indep clean

                """,
        ]
        for (path, text) in files { try text.write(toFile: "\(folder)/\(path)", atomically: true, encoding: .utf8) }
        chmod("\(folder)/debian/rules", 0o755)
    }

    /// Makes a signed archive at `root` holding `buildd-no-such-package` 1.0 for bookworm main, and returns the
    /// path of its ASCII-armoured public key.
    static func makeLocalArchive(at root: String, gnupg: String, farm: FarmHarness) async throws -> String {
        let package = farm.directory + "/pkg"
        try FileManager.default.createDirectory(atPath: package + "/DEBIAN", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: package + "/usr/share/buildd-no-such-package",
                                                withIntermediateDirectories: true)
        try "present\n".write(toFile: package + "/usr/share/buildd-no-such-package/present", atomically: true, encoding: .utf8)
        try """
            Package: buildd-no-such-package
            Version: 1.0
            Architecture: all
            Maintainer: buildd developers <buildd@localhost>
            Description: the build dependency only the test's local archive has

            """.write(toFile: package + "/DEBIAN/control", atomically: true, encoding: .utf8)
        let pool = root + "/pool/main"
        let lists = root + "/dists/bookworm/main/binary-amd64"
        for folder in [pool, lists] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        _ = try await RealBuildTests.host("/usr/bin/dpkg-deb", "--root-owner-group", "--build", package,
                                          pool + "/buildd-no-such-package_1.0_all.deb")
        let packages = try await FarmHarness.run("/usr/bin/env", ["-C", root, "dpkg-scanpackages", "--multiversion", "pool",
                                                                  "/dev/null"], timeout: .seconds(60))
        #expect(packages.status == 0, "\(packages.error)")
        try packages.output.write(toFile: lists + "/Packages", atomically: true, encoding: .utf8)
        let bytes = Array(packages.output.utf8)
        let release = """
            Origin: buildd-test
            Label: buildd-test
            Suite: bookworm
            Codename: bookworm
            Date: \(Self.rfc2822(Date()))
            Architectures: amd64
            Components: main
            SHA256:
             \(SHA256.hex(of: bytes)) \(bytes.count) main/binary-amd64/Packages

            """
        try release.write(toFile: root + "/dists/bookworm/Release", atomically: true, encoding: .utf8)
        _ = try await RealBuildTests.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--passphrase", "",
                                          "--quick-gen-key", "buildd archive <archive@localhost>", "ed25519", "sign", "never")
        _ = try await RealBuildTests.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--yes", "--clearsign",
                                          "--output", root + "/dists/bookworm/InRelease", root + "/dists/bookworm/Release")
        let key = farm.directory + "/local-archive.asc"
        _ = try await RealBuildTests.host("/usr/bin/env", "GNUPGHOME=\(gnupg)", "/usr/bin/gpg", "--batch", "--yes", "--armor",
                                          "--output", key, "--export")
        return key
    }

    /// Stops a helper the test started, for certain (it inherited the test process's ignored SIGTERM).
    static func stop(_ process: Process) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func rfc2822(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'UTC'"
        return formatter.string(from: date)
    }
}

extension BuildStatus {
    /// Ended, or waiting on something a person must do.
    var isTerminalOrWaiting: Bool { ![.needsBuild, .building, .gathering, .uploading, .cancelling].contains(self) }
}
