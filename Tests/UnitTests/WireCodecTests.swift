import BuilddShared
import Foundation
import Testing

@Suite(.timeLimit(.minutes(1))) struct WireCodecTests {
    let event = AgentEvent(kind: .finished, builder: "bld-1", session: "abc", seq: 7, state: .idle, buildID: 42,
                           attempt: 2, result: .ok,
                           files: [FileDigest(name: "hello_1.0_amd64.deb", sha256: String(repeating: "a", count: 64), size: 10)],
                           log: FileDigest(name: "buildlog.txt", sha256: String(repeating: "b", count: 64), size: 3))

    func decode(_ text: String) throws -> AgentEvent { try WireCodec.decodeEvent(Array(text.utf8)) }

    @Test func eventRoundTrips() throws {
        #expect(try WireCodec.decodeEvent(WireCodec.encode(event)) == event)
    }

    @Test func jobRoundTrips() throws {
        let job = JobMessage(buildID: 1, attempt: 3, processor: "amd64", buildType: "binarypackage", distribution: "ubuntu",
                             series: "noble", archTag: "amd64", sourceName: "hello", sourceVersion: "2.10-3",
                             sourceFiles: [], uploadURL: "http://m/v1/builds/1/attempts/3/files/",
                             leaseSeconds: 30)
        #expect(try WireCodec.decodeJob(WireCodec.encode(job)) == job)
    }

    /// Every builder of a processor may see its jobs on the broker: a job carries no secret, and only an
    /// `accepted` that declares an upload key's digest is taken.
    @Test func aJobCarriesNoSecretAndAnAcceptDeclaresItsKey() throws {
        let job = JobMessage(buildID: 1, attempt: 3, processor: "amd64", buildType: "binarypackage", distribution: "ubuntu",
                             series: "noble", archTag: "amd64", sourceName: "hello", sourceVersion: "2.10-3",
                             sourceFiles: [], uploadURL: "http://m/v1/builds/1/attempts/3/files/", leaseSeconds: 30)
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(WireCodec.encode(job))) as? [String: Any])
        #expect(Set(fields.keys) == ["v", "kind", "build_id", "attempt", "processor", "build_type", "distribution",
                                     "series", "arch_tag", "source_name", "source_version", "source_files",
                                     "upload_url", "lease_seconds"])
        let key = String(repeating: "0f", count: 32)
        let accepted = #"{"v":1,"kind":"accepted","builder":"b1","session":"s","seq":1,"build_id":1,"attempt":3"#
        #expect(try decode(accepted + #","upload_key_sha256":"\#(key)"}"#).uploadKeySHA256 == key)
        #expect(throws: WireError(.invalidField, "accepted needs upload_key_sha256 (64 lowercase hex digits)")) {
            try decode(accepted + "}")
        }
        #expect(throws: WireError(.invalidField, "accepted needs upload_key_sha256 (64 lowercase hex digits)")) {
            try decode(accepted + #","upload_key_sha256":"not-a-digest"}"#)
        }
    }

    @Test func aJobNamesItsChrootByDigestAndAHostileOneIsRefused() throws {
        var job = JobMessage(buildID: 1, attempt: 3, processor: "amd64", buildType: "binarypackage", distribution: "debian",
                             series: "bookworm", archTag: "amd64", sourceName: "hello", sourceVersion: "2.10-3",
                             sourceFiles: [], uploadURL: "http://m/v1/builds/1/attempts/3/files/",
                             leaseSeconds: 30,
                             chroot: FileDigest(name: "chroot.tar.zst", sha256: String(repeating: "a", count: 64), size: 5))
        #expect(try WireCodec.decodeJob(WireCodec.encode(job)) == job)
        // A job without one (an arch series with no chroot, or a master before chroots) still decodes.
        job.chroot = nil
        #expect(try WireCodec.decodeJob(WireCodec.encode(job)).chroot == nil)
        for bad in [FileDigest(name: "../../etc/passwd", sha256: String(repeating: "a", count: 64), size: 5),
                    FileDigest(name: "c.tar", sha256: "ABC", size: 5),
                    FileDigest(name: "c.tar", sha256: String(repeating: "A", count: 64), size: 5),
                    FileDigest(name: "c.tar", sha256: String(repeating: "a", count: 64), size: -1)] {
            job.chroot = bad
            #expect(throws: WireError(.invalidField, "chroot")) { try WireCodec.decodeJob(WireCodec.encode(job)) }
        }
    }

    @Test func garbageIsMalformed() {
        #expect(throws: WireError(.malformed, "not a JSON object")) { try decode("not json") }
        #expect(throws: WireError(.malformed, "not a JSON object")) { try decode("[1,2]") }
        #expect(throws: WireError(.malformed, "missing field v")) { try decode("{}") }
    }

    @Test func otherVersionsAreRefused() {
        #expect(throws: WireError(.unsupportedVersion, "version 2, this build (\(BuilddRelease.version)) reads 1-1")) {
            try decode(#"{"v":2,"kind":"hello"}"#)
        }
        #expect(throws: WireError(.unsupportedVersion, "version 0, this build (\(BuilddRelease.version)) reads 1-1")) {
            try decode(#"{"v":0,"kind":"hello"}"#)
        }
    }

    /// Rolling upgrades: a reader takes a message of a newer release that added fields it does not know, and
    /// a hello from a release that announced nothing; a hello that announces gives the master its release and
    /// capabilities, and a hostile announcement is refused.
    @Test func unknownFieldsAreIgnoredAndHelloAnnouncesReleaseAndCapabilities() throws {
        let newer = #"{"v":1,"kind":"hello","builder":"b1","session":"s","seq":1,"state":"IDLE","#
            + #""release":"1.1.0","capabilities":["one-shot","reset"],"shiny_new_field":{"x":[1,2]}}"#
        let event = try decode(newer)
        let report = try event.report(user: "b1")
        #expect(report.announcement == AgentAnnouncement(release: "1.1.0", capabilities: ["one-shot", "reset"]))
        let older = try decode(#"{"v":1,"kind":"hello","builder":"b1","session":"s","seq":1,"state":"IDLE"}"#)
        #expect(try older.report(user: "b1").announcement == nil)
        // Only hello announces: a heartbeat's fields of the kind are not read as an announcement.
        let beat = try decode(#"{"v":1,"kind":"heartbeat","builder":"b1","session":"s","seq":2,"state":"IDLE","release":"1.1.0"}"#)
        #expect(try beat.report(user: "b1").announcement == nil)
        #expect(throws: WireError(.invalidField, "release")) {
            try decode(#"{"v":1,"kind":"hello","builder":"b1","session":"s","seq":1,"state":"IDLE","release":"1 0"}"#)
        }
        #expect(throws: WireError(.invalidField, "capabilities (at most 64 names)")) {
            try decode(#"{"v":1,"kind":"hello","builder":"b1","session":"s","seq":1,"state":"IDLE","release":"1","capabilities":["../x"]}"#)
        }
        // What this build's agents send is what this build reads.
        var hello = AgentEvent(kind: .hello, builder: "b1", session: "s", seq: 1, state: .idle)
        hello.release = BuilddRelease.version
        hello.capabilities = BuilddRelease.agentCapabilities
        #expect(try WireCodec.decodeEvent(WireCodec.encode(hello)).report(user: "b1").announcement
                == AgentAnnouncement(release: BuilddRelease.version, capabilities: BuilddRelease.agentCapabilities))
    }

    @Test func oversizedMessagesAreRefusedBeforeParsing() {
        let big = [UInt8](repeating: UInt8(ascii: " "), count: maxMessageBytes + 1)
        #expect(throws: WireError(.tooLarge, "\(big.count) bytes, limit \(maxMessageBytes)")) {
            try WireCodec.decodeEvent(big)
        }
    }

    @Test func missingAndWrongFieldsAreNamed() {
        #expect(throws: WireError(.malformed, "missing field session")) {
            try decode(#"{"v":1,"kind":"hello","builder":"b","seq":1,"state":"IDLE"}"#)
        }
        #expect(throws: WireError.self) {
            try decode(#"{"v":1,"kind":"explode","builder":"b","session":"s","seq":1}"#)
        }
        #expect(throws: WireError(.invalidField, "accepted needs build_id and attempt")) {
            try decode(#"{"v":1,"kind":"accepted","builder":"b","session":"s","seq":1}"#)
        }
        #expect(throws: WireError(.invalidField, "finished needs result")) {
            try decode(#"{"v":1,"kind":"finished","builder":"b","session":"s","seq":1,"build_id":1,"attempt":1}"#)
        }
        #expect(throws: WireError(.invalidField, "builder name")) {
            try decode(#"{"v":1,"kind":"hello","builder":"../etc","session":"s","seq":1,"state":"IDLE"}"#)
        }
    }

    @Test func filesThatEscapeTheirFolderAreRefused() {
        var bad = event
        bad.files = [FileDigest(name: "../../etc/passwd", sha256: String(repeating: "a", count: 64), size: 1)]
        #expect(throws: WireError(.invalidField, "file entry")) { try WireCodec.decodeEvent(WireCodec.encode(bad)) }
    }

    @Test(arguments: ["../x", "/etc/passwd", ".hidden", "a/b", "", "a\u{0}b", "spaced name", String(repeating: "x", count: 256)])
    func unsafeFileNames(name: String) {
        #expect(!Naming.isValidFileName(name))
    }

    @Test(arguments: ["hello_2.10-3_amd64.deb", "buildlog_ubuntu-noble-amd64.zlib_1:1.3-1.txt", "x~y+z"])
    func safeFileNames(name: String) {
        #expect(Naming.isValidFileName(name))
    }
}
