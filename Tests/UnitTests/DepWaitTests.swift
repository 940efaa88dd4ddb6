import BuilddCore
import Testing

/// The dep-wait rule (``DepWait``): what a dependency wait misses, read from a builder's message, and when
/// an archive's `Packages` index satisfies it.
@Suite(.timeLimit(.minutes(1))) struct DepWaitTests {
    static let packages = """
        Package: libfoo-dev
        Version: 2.4-1
        Architecture: amd64
        Multi-Arch: same
        Description: the foo library
         over two lines

        Package: python3
        Version: 3.11.2-1
        Architecture: amd64
        Multi-Arch: allowed

        Package: mail-transport
        Version: 1.0
        Architecture: all
        Provides: mail-transport-agent, default-mta (= 2.0)

        Package: broken-stanza
        Architecture: amd64

        """

    @Test func theMissingRelationIsReadFromTheBuildersMessage() {
        #expect(DepWait.relation(inMessage: "missing dependencies: libfoo-dev (>= 2.0), libbar-dev") == "libfoo-dev (>= 2.0), libbar-dev")
        #expect(DepWait.relation(inMessage: "build command ended with exited(3)") == nil)
        #expect(DepWait.relation(inMessage: "missing dependencies: (((") == nil, "an unreadable relation is not kept")
        #expect(DepWait.relation(inMessage: nil) == nil)
    }

    @Test func aPackagesFileIsReadStanzaByStanza() {
        let entries = PackageIndex.entries(inPackagesFile: Self.packages)
        #expect(entries.map(\.name) == ["libfoo-dev", "python3", "mail-transport"], "a stanza without a version is skipped")
        #expect(entries[2].provides.map(\.name) == ["mail-transport-agent", "default-mta"])
        #expect(entries[2].provides[1].version == DebianVersion("2.0"))
    }

    @Test func aWaitEndsOnlyWhenEveryClauseIsSatisfied() {
        var index = PackageIndex()
        index.add(packagesFile: Self.packages)
        #expect(DepWait.decide(dependencies: "libfoo-dev (>= 2.0)", architecture: "amd64", index: index) == .retry)
        #expect(DepWait.decide(dependencies: "libfoo-dev (>= 3.0), python3:any", architecture: "amd64", index: index)
                == .wait(missing: "libfoo-dev (>= 3.0)"))
        #expect(DepWait.decide(dependencies: "default-mta (>= 2.0) | postfix", architecture: "amd64", index: index) == .retry)
        #expect(DepWait.decide(dependencies: "libfoo-dev [arm64], mail-transport-agent", architecture: "amd64", index: index)
                == .retry, "a clause for another architecture does not apply")
        #expect(DepWait.decide(dependencies: "libfoo-dev (>= 2.0)", architecture: "arm64", index: index)
                == .wait(missing: "libfoo-dev (>= 2.0)"))
        if case .unreadable = DepWait.decide(dependencies: "libfoo-dev (>=", architecture: "amd64", index: index) {} else {
            Issue.record("an unreadable relation is said so")
        }
    }

    @Test func theIndexOfEachComponent() {
        let source = AptSource(archive: "ubuntu", url: "http://archive.example/ubuntu/", suite: "noble-updates",
                               components: ["main", "universe"], signingKey: nil)
        #expect(DepWait.indexURLs(of: source, architecture: "amd64") == [
            "http://archive.example/ubuntu/dists/noble-updates/main/binary-amd64/Packages",
            "http://archive.example/ubuntu/dists/noble-updates/universe/binary-amd64/Packages",
        ])
    }
}
