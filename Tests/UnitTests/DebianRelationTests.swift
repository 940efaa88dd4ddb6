@testable import BuilddCore
import Testing

/// Debian's version ordering and relations, as dpkg has them: what decides when a dependency wait can end.
@Suite(.timeLimit(.minutes(1))) struct DebianVersionTests {
    static func version(_ text: String) -> DebianVersion { DebianVersion(text)! }

    /// Pairs in dpkg's order (deb-version(7), dpkg's own test cases and Debian policy 5.6.12): each first
    /// sorts before the second.
    static let ascending: [(String, String)] = [
        ("1.0~rc1", "1.0"), ("1.0", "1.0-1"), ("1.0", "1.0+b1"), ("1.0", "1.0.1"), ("1.9", "1.10"),
        ("2.3-1", "2.30-1"), ("2.0", "1:0.1"), ("1.0a", "1.0+"), ("1.0~~", "1.0~~a"), ("1.0~~a", "1.0~"),
        ("1.0~", "1.0"), ("1.0", "1.0a"), ("7.6-0", "7.6p2-4"), ("1.2.3-1", "1.2.3-1.1"), ("1.2.3-1~bpo1", "1.2.3-1"),
        ("0.9", "1.0"), ("1.0-1", "1.0-2"), ("1.0-9", "1.0-10"), ("2:1.0", "10:0.1"), ("1.0-1ubuntu1", "1.0-2"),
        ("1.0+dfsg1-1", "1.0+dfsg2-1"), ("1.0-a", "1.0-b"), ("1.0+1", "1.0+a"),
    ]

    /// Spelt differently, equal in dpkg's order.
    static let equal: [(String, String)] = [
        ("1.0", "0:1.0"), ("1.01", "1.1"), ("1.0-0", "1.0"), ("1.00", "1.0"), ("1.0-01", "1.0-1"),
    ]

    @Test func dpkgsOrdering() {
        for (lower, higher) in Self.ascending {
            #expect(Self.version(lower) < Self.version(higher), "\(lower) < \(higher)")
            #expect(!(Self.version(higher) < Self.version(lower)), "not \(higher) < \(lower)")
            #expect(DebianVersion.compare(Self.version(higher), Self.version(lower)) > 0)
        }
        for (a, b) in Self.equal {
            #expect(Self.version(a) == Self.version(b), "\(a) = \(b)")
            #expect(Self.version(a).hashValue == Self.version(b).hashValue)
        }
        let sorted = ["1.0", "1.0~rc1", "1:0.5", "1.0-1", "0.99", "1.0+b1", "1.0~~"].map(Self.version).sorted()
        #expect(sorted.map(\.description) == ["0.99", "1.0~~", "1.0~rc1", "1.0", "1.0-1", "1.0+b1", "1:0.5"])
    }

    @Test func partsAndRefusals() {
        let parsed = Self.version("2:1.0-rc1-3ubuntu1")
        #expect(parsed.epoch == 2 && parsed.upstream == "1.0-rc1" && parsed.revision == "3ubuntu1")
        #expect(Self.version("1.0").revision == "" && Self.version("1.0").epoch == 0)
        for bad in ["", "a1.0", "1.0-", "x:1.0", "-1:1.0", "1.0 beta", "1.0-1/2", ":1.0"] {
            #expect(DebianVersion(bad) == nil, "\(bad) is not a version")
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct DebianRelationTests {
    static func entry(_ name: String, _ version: String, arch: String = "amd64", multiArch: String? = nil,
                      provides: [(String, String?)] = []) -> PackageIndex.Entry {
        PackageIndex.Entry(name: name, version: DebianVersion(version)!, architecture: arch, multiArch: multiArch,
                           provides: provides.map { ($0.0, $0.1.flatMap(DebianVersion.init)) })
    }

    static let archive = PackageIndex([
        entry("debhelper-compat", "13"), entry("libfoo-dev", "2.4-1"), entry("gettext", "0.21-12", arch: "all"),
        entry("python3", "3.11.2-1", multiArch: "allowed"), entry("perl", "5.36.0-7", arch: "arm64", multiArch: "allowed"),
        entry("mawk", "1.3.4-1", provides: [("awk", nil)]), entry("libbar1", "1.0-1", provides: [("libbar-abi-1", "1.0")]),
        entry("make", "4.3-4.1", arch: "arm64"),
    ])

    @Test func parsesEveryPartOfARelation() throws {
        let field = try DebianDependency.parse("""
            debhelper-compat (= 13), libfoo-dev (>= 2.0) | libfoo2-dev, python3:any,
             libnuma-dev [amd64 arm64], check <!nocheck>, libwin [!amd64], gettext (>> 0.19) [linux-any] <!stage1> <cross>,
            """)
        #expect(field.clauses.count == 7)
        #expect(field.clauses[1].map(\.package) == ["libfoo-dev", "libfoo2-dev"])
        #expect(field.clauses[1][0].constraint?.op == .laterOrEqual)
        #expect(field.clauses[2][0].qualifier == "any")
        #expect(field.clauses[3][0].architectures == ["amd64", "arm64"])
        #expect(field.clauses[5][0].negatedArchitectures)
        #expect(field.description.contains("gettext (>> 0.19) [linux-any] <!stage1> <cross>"))
        #expect(try DebianDependency.parse("foo (< 1.0)").clauses[0][0].constraint?.op == .earlierOrEqual)
        for bad in ["Foo", "foo (>= )", "foo (=> 1.0", "foo [amd64 !i386]", "foo (~ 1.0)", "foo bar", "f"] {
            #expect(throws: DebianDependency.ParseError.self, "\(bad)") { try DebianDependency.parse(bad) }
        }
    }

    /// Alternatives, version constraints, architecture restrictions and qualifiers, profiles and Provides.
    @Test func whatAnArchiveSatisfies() throws {
        func missing(_ text: String, on arch: String = "amd64") throws -> String {
            try DebianDependency(clauses: DebianDependency.parse(text).unsatisfied(on: arch, by: Self.archive)).description
        }
        #expect(try missing("debhelper-compat (= 13), libfoo-dev (>= 2.0)") == "")
        #expect(try missing("libfoo-dev (>= 3.0)") == "libfoo-dev (>= 3.0)")
        #expect(try missing("libfoo-dev (>= 3.0) | libfoo-dev (<< 2.5)") == "")
        #expect(try missing("libfoo-dev (>> 2.4-1)") == "libfoo-dev (>> 2.4-1)")
        #expect(try missing("libfoo-dev (>= 2.4~)") == "")
        #expect(try missing("gettext (>= 0.21)") == "", "an arch: all package serves every architecture")
        #expect(try missing("python3:any (>= 3.9)") == "")
        #expect(try missing("perl:any") == "", "Multi-Arch: allowed of another architecture, for :any")
        #expect(try missing("perl") == "perl", "not without :any")
        #expect(try missing("make") == "make")
        #expect(try missing("make [arm64]") == "", "a relation for other architectures does not apply")
        #expect(try missing("make [arm64]", on: "arm64") == "")
        #expect(try missing("make [!amd64]") == "")
        #expect(try missing("missing-tool [amd64]") == "missing-tool [amd64]")
        #expect(try missing("missing-tool <!nocheck>") == "missing-tool <!nocheck>")
        #expect(try missing("missing-tool <nocheck>") == "", "applies only with the nocheck profile")
        #expect(try missing("awk") == "", "a virtual package")
        #expect(try missing("awk (>= 1.0)") == "awk (>= 1.0)", "an unversioned Provides meets no version")
        #expect(try missing("libbar-abi-1 (>= 1.0)") == "")
        #expect(try missing("libbar-abi-1 (>= 2.0)") == "libbar-abi-1 (>= 2.0)")
        #expect(try missing("buildd-no-such-package (>= 1.0), debhelper-compat (= 13)") == "buildd-no-such-package (>= 1.0)")
    }
}
