@testable import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// The rules a submit over the API is checked by before anything is stored: the `.dsc` against the files
/// given with it, the names the `build` table takes (the same patterns as its CHECKs), the fields of the body
/// named in the 400 a bad one gets, and the page cursors.
@Suite(.timeLimit(.minutes(1))) struct SubmitRulesTests {
    static let tarball = FileDigest(name: "tiny_1.2.orig.tar.gz", sha256: String(repeating: "a", count: 64), size: 725946)
    static let debian = FileDigest(name: "tiny_1.2-3.debian.tar.xz", sha256: String(repeating: "b", count: 64), size: 6132)
    static let package = DebianControl.SourcePackage(name: "tiny", version: "1.2-3", files: [tarball, debian])

    @Test func theFilesOfADscMustBeExactlyTheOnesItLists() {
        #expect(DebianControl.mismatch(of: Self.package, source: "tiny", version: "1.2-3", files: [Self.debian, Self.tarball]) == nil)
        let cases: [([FileDigest], String, String, String)] = [
            ([Self.tarball], "tiny", "1.2-3", "tiny_1.2-3.debian.tar.xz is listed but not given"),
            ([Self.tarball, FileDigest(name: Self.debian.name, sha256: Self.debian.sha256, size: 1)], "tiny", "1.2-3", "does not match the .dsc"),
            ([Self.tarball, FileDigest(name: Self.debian.name, sha256: String(repeating: "c", count: 64), size: 6132)], "tiny", "1.2-3",
             "does not match the .dsc"),
            ([Self.tarball, Self.debian, FileDigest(name: "extra.patch", sha256: String(repeating: "d", count: 64), size: 3)], "tiny", "1.2-3",
             "extra.patch is given but not listed"),
            ([Self.tarball, Self.debian], "other", "1.2-3", "it is tiny 1.2-3, not other 1.2-3"),
            ([Self.tarball, Self.debian], "tiny", "1.2-4", "it is tiny 1.2-3, not tiny 1.2-4"),
        ]
        for (files, source, version, reason) in cases {
            let problem = DebianControl.mismatch(of: Self.package, source: source, version: version, files: files)
            #expect(problem?.contains(reason) == true, "\(problem ?? "nil") for \(files.map(\.name)) \(source) \(version)")
        }
    }

    /// The Swift checks say what the schema's CHECKs say: the patterns are the ones in the migration, and
    /// names on either side of each limit are judged the same by both.
    @Test func sourceNamesAndVersionsFollowTheBuildTablesChecks() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let schema = try String(contentsOf: root.appendingPathComponent("deploy/migrations/0001_initial.sql"), encoding: .utf8)
        #expect(schema.contains("source_name ~ '\(Naming.sourceNamePattern)'"))
        #expect(schema.contains("source_version ~ '\(Naming.versionPattern)'"))
        let names = ["hello", "g++", "libc6.1-dev", "a", "0ad", String(repeating: "a", count: 128), String(repeating: "a", count: 129),
                     "Hello", "-x", ".x", "x_y", "", "x y", "x/y"]
        let versions = ["1.0", "2:1.0-1~bpo12+1", "A1", String(repeating: "1", count: 128), String(repeating: "1", count: 129), "",
                        "1 0", "1_0", "1/0"]
        let namePattern = try Regex(Naming.sourceNamePattern), versionPattern = try Regex(Naming.versionPattern)
        for name in names { #expect(Naming.isValidSourceName(name) == (name.wholeMatch(of: namePattern) != nil), "\(name)") }
        for version in versions { #expect(Naming.isValidVersion(version) == (version.wholeMatch(of: versionPattern) != nil), "\(version)") }
    }

    @Test func aBadSubmitNamesItsField() throws {
        func problem(_ json: String) -> String {
            do {
                _ = try SubmitBody.decode(Array(json.utf8)).request()
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        let base = #""archseries": "debian/bookworm/amd64", "source": "hello", "version": "2.10-3""#
        #expect(problem("{\(base)}") == "accepted")
        #expect(problem(#"{"source": "hello", "version": "1"}"#).contains("archseries: missing"))
        #expect(problem("{\(base), \"pocket\": \"attic\"}").contains("pocket: one of release, security, updates, proposed, backports"))
        #expect(problem("{\(base), \"files\": [{\"name\": \"x\", \"sha256\": 5, \"size\": 1}]}").contains("files[0].sha256: wrong type"))
        #expect(problem("{\(base), \"files\": [{\"name\": \"../x\", \"sha256\": \"\(String(repeating: "a", count: 64))\", \"size\": 1}]}")
            .contains("files[0].name"))
        #expect(problem(#"{"archseries": "debian/bookworm", "source": "hello", "version": "1"}"#).contains("archseries:"))
        #expect(problem(#"{"archseries": "debian/bookworm/amd64", "source": "hello", "version": "1 0"}"#).contains("version:"))
        #expect(problem("not json").contains("the body must be JSON"))
    }

    /// The key compares requests with their defaults filled in and their files in any order.
    @Test func theSameSubmitWrittenTwoWaysIsTheSameForItsKey() throws {
        let files = #"[{"name": "b", "sha256": "\#(String(repeating: "b", count: 64))", "size": 2}, {"name": "a", "sha256": "\#(String(repeating: "a", count: 64))", "size": 1}]"#
        let reordered = #"[{"name": "a", "sha256": "\#(String(repeating: "a", count: 64))", "size": 1}, {"name": "b", "sha256": "\#(String(repeating: "b", count: 64))", "size": 2}]"#
        let one = try SubmitBody.decode(Array(#"{"archseries": "d/s/a", "source": "x", "version": "1", "files": \#(files)}"#.utf8))
        let two = try SubmitBody.decode(Array(#"{"urgency": "medium", "files": \#(reordered), "version": "1", "source": "x", "archseries": "d/s/a", "pocket": "release"}"#.utf8))
        let three = try SubmitBody.decode(Array(#"{"archseries": "d/s/a", "source": "x", "version": "1", "urgency": "high", "files": \#(files)}"#.utf8))
        #expect(one.canonical == two.canonical)
        #expect(one.canonical != three.canonical)
    }

    @Test func cursorsGoBothWaysAndRefuseWhatTheyDidNotGive() {
        for start in [BuilddStore.PageStart.newest(before: 42), .oldest(after: 7)] {
            #expect(HTTPAPI.pageStart(cursor: HTTPAPI.cursor(start)) == start)
        }
        for bad in ["", "n", "x12", "n-1", "o1e3", "n12abc"] { #expect(HTTPAPI.pageStart(cursor: bad) == nil, "\(bad)") }
    }
}
