import BuilddCore
import Testing

/// Launchpad's archive dependencies (``ArchiveDependencies``): which apt sources a build draws its build
/// dependencies from, by pocket, component and the archives its archive depends on.
@Suite(.timeLimit(.minutes(1))) struct ArchiveDependencyTests {
    static let key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nmDMEZ...\n-----END PGP PUBLIC KEY BLOCK-----\n"
    static let archives: [String: ArchiveSource] = [
        "ubuntu": ArchiveSource(name: "ubuntu", kind: .primary, url: "http://archive.example/ubuntu"),
        "team-tools": ArchiveSource(name: "team-tools", url: "http://ppa.example/team/tools", signingKey: key),
        "secret": ArchiveSource(name: "secret", url: "https://buildd:pw@private.example/secret", isPrivate: true,
                                signingKey: key,
                                dependencies: [ArchiveDependency(archive: "team-tools", pocket: .release, component: .main)]),
        "pinned": ArchiveSource(name: "pinned", url: "http://ppa.example/pinned",
                                dependencies: [ArchiveDependency(archive: "ubuntu", pocket: .security, component: .universe)]),
    ]

    static func lines(_ archive: String, _ pocket: Pocket, _ component: Component) throws -> [String] {
        try ArchiveDependencies.sources(for: .init(archive: archive, series: "noble", pocket: pocket, component: component),
                                        primary: "ubuntu", archives: archives).map(\.legacyLine)
    }

    /// Launchpad's two tables, as `archivedependencies.py` states them.
    @Test func pocketAndComponentDependencies() {
        #expect(ArchiveDependencies.pockets(for: .release) == [.release])
        #expect(ArchiveDependencies.pockets(for: .security) == [.release, .security])
        #expect(ArchiveDependencies.pockets(for: .updates) == [.release, .security, .updates])
        #expect(ArchiveDependencies.pockets(for: .proposed) == [.release, .security, .updates, .proposed])
        #expect(ArchiveDependencies.pockets(for: .backports) == [.release, .security, .updates, .backports])
        #expect(ArchiveDependencies.components(for: .main) == [.main])
        #expect(ArchiveDependencies.components(for: .restricted) == [.main, .restricted])
        #expect(ArchiveDependencies.components(for: .universe) == [.main, .restricted, .universe])
        #expect(ArchiveDependencies.components(for: .multiverse) == [.main, .restricted, .universe, .multiverse])
        #expect(ArchiveDependencies.components(for: .partner) == [.partner])
        #expect(ArchiveDependencies.suite(series: "noble", pocket: .release) == "noble")
        #expect(ArchiveDependencies.suite(series: "noble", pocket: .security) == "noble-security")
    }

    /// A primary build in the security pocket of universe sees release and security, main to universe.
    @Test func aPrimarySecurityBuild() throws {
        #expect(try Self.lines("ubuntu", .security, .universe) == [
            "deb http://archive.example/ubuntu noble main restricted universe",
            "deb http://archive.example/ubuntu noble-security main restricted universe",
        ])
        #expect(try Self.lines("ubuntu", .release, .main) == ["deb http://archive.example/ubuntu noble main"])
    }

    /// A PPA's build sees its own archive in its pocket and component dependencies, then the primary
    /// archive in updates and every component (Launchpad's default for a PPA).
    @Test func aPPABuildDrawsOnThePrimaryArchiveInUpdates() throws {
        #expect(try Self.lines("team-tools", .release, .main) == [
            "deb http://ppa.example/team/tools noble main",
            "deb http://archive.example/ubuntu noble main restricted universe multiverse",
            "deb http://archive.example/ubuntu noble-security main restricted universe multiverse",
            "deb http://archive.example/ubuntu noble-updates main restricted universe multiverse",
        ])
        let sources = try ArchiveDependencies.sources(
            for: .init(archive: "team-tools", series: "noble", pocket: .release, component: .main), primary: "ubuntu",
            archives: Self.archives)
        #expect(sources.first?.signingKey == Self.key && sources.last?.signingKey == nil)
        #expect(sources.first?.line(keyPath: "/etc/apt/keyrings/team-tools.asc")
                == "deb [signed-by=/etc/apt/keyrings/team-tools.asc] http://ppa.example/team/tools noble main")
    }

    /// An archive's own dependencies come after it, each in its pocket and component dependencies; a
    /// dependency on the primary archive replaces the default one.
    @Test func anArchivesDependenciesFollowIt() throws {
        #expect(try Self.lines("secret", .updates, .universe) == [
            "deb https://buildd:pw@private.example/secret noble main restricted universe",
            "deb https://buildd:pw@private.example/secret noble-security main restricted universe",
            "deb https://buildd:pw@private.example/secret noble-updates main restricted universe",
            "deb http://ppa.example/team/tools noble main",
            "deb http://archive.example/ubuntu noble main restricted universe multiverse",
            "deb http://archive.example/ubuntu noble-security main restricted universe multiverse",
            "deb http://archive.example/ubuntu noble-updates main restricted universe multiverse",
        ])
        #expect(try Self.lines("pinned", .release, .main) == [
            "deb http://ppa.example/pinned noble main",
            "deb http://archive.example/ubuntu noble main restricted universe",
            "deb http://archive.example/ubuntu noble-security main restricted universe",
        ])
    }

    /// What cannot be worked out or added is said, not guessed.
    @Test func badArchivesAreRefused() {
        #expect(throws: ArchiveDependencyError.self) { try Self.lines("nowhere", .release, .main) }
        var dangling = Self.archives
        dangling["team-tools"]?.dependencies = [ArchiveDependency(archive: "gone")]
        #expect(throws: ArchiveDependencyError("archive 'team-tools' depends on unknown archive 'gone'")) {
            try ArchiveDependencies.sources(for: .init(archive: "team-tools", series: "noble", pocket: .release, component: .main),
                                            primary: "ubuntu", archives: dangling)
        }
        #expect(ArchiveDependencies.problem(Self.archives["secret"]!) == nil)
        #expect(ArchiveDependencies.problem(ArchiveSource(name: "x", url: "ftp://x")) != nil)
        #expect(ArchiveDependencies.problem(ArchiveSource(name: "x", url: "http://x/ y")) != nil)
        #expect(ArchiveDependencies.problem(ArchiveSource(name: "x", url: "http://x", dependencies: [.init(archive: "x")]))
                == "an archive cannot depend on itself")
        #expect(ArchiveDependencies.problem(ArchiveSource(name: "x", url: "http://x", signingKey: "not a key")) != nil)
        #expect(ArchiveDependencies.problem(ArchiveSource(name: "Bad Name", url: "http://x")) != nil)
    }
}
