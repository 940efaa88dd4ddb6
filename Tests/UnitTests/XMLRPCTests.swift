@testable import BuilddMasterKit
import BuilddShared
import Testing

@Suite(.timeLimit(.minutes(1))) struct XMLRPCTests {
    @Test func everyValueTypeSurvivesAnEncodeAndDecode() throws {
        let value = XMLRPCValue.struct([
            "int": .int(-42), "bool": .bool(true), "string": .string("a < b & \"c\" > d"), "double": .double(2.5),
            "base64": .base64(Array("logtail\n".utf8)), "date": .dateTime("20261129T08:28:34"), "nil": .nil,
            "array": .array([.int(1), .string(""), .array([])]), "empty": .struct([:]),
        ])
        #expect(try XMLRPC.decodeResponse(XMLRPC.encodeResponse(value)) == value)
        let call = try XMLRPC.decodeCall(XMLRPC.encodeCall("build", [.string("PACKAGEBUILD-1"), value]))
        #expect(call.method == "build" && call.parameters == [.string("PACKAGEBUILD-1"), value])
    }

    @Test func readsWhatPythonsXmlrpclibSends() throws {
        // launchpad-buildd's answers are made by Python's xmlrpc: untyped strings, i4, CDATA-free text, whitespace.
        let body = """
            <?xml version='1.0'?>
            <methodResponse>
            <params>
            <param>
            <value><struct>
            <member>
            <name>builder_status</name>
            <value><string>BuilderStatus.WAITING</string></value>
            </member>
            <member>
            <name>build_id</name>
            <value>PACKAGEBUILD-7</value>
            </member>
            <member>
            <name>filemap</name>
            <value><struct>
            <member><name>hello_1.0_amd64.deb</name><value><string>0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33</string></value></member>
            </struct></value>
            </member>
            <member><name>build_status</name><value><string>BuildStatus.OK</string></value></member>
            <member><name>count</name><value><i4>3</i4></value></member>
            <member><name>logtail</name><value><base64>
            bG9n
            </base64></value></member>
            </struct></value>
            </param>
            </params>
            </methodResponse>
            """
        let status = try LegacyStatus(XMLRPC.decodeResponse(Array(body.utf8)))
        #expect(status.state == .waiting && status.buildID == "PACKAGEBUILD-7" && status.result == .ok)
        #expect(status.filemap == ["hello_1.0_amd64.deb": "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"])
        #expect(status.logTail == Array("log".utf8))
    }

    @Test func faultsBecomeTypedErrors() {
        let fault = """
            <?xml version='1.0'?><methodResponse><fault><value><struct>
            <member><name>faultCode</name><value><int>8002</int></value></member>
            <member><name>faultString</name><value><string>error</string></value></member>
            </struct></value></fault></methodResponse>
            """
        #expect(throws: XMLRPCError.fault(code: 8002, message: "error")) { try XMLRPC.decodeResponse(Array(fault.utf8)) }
    }

    @Test(arguments: [
        "", "<<< this is not XML-RPC >>>", "<methodResponse>", "<methodResponse></methodResponse>",
        "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
        "<methodResponse><params><param><value><boolean>2</boolean></value></param></params></methodResponse>",
        "<methodResponse><params><param><value><base64>!!</base64></value></param></params></methodResponse>",
        "<methodResponse><params><param><value><what/></value></param></params></methodResponse>",
        "<methodResponse><params><param><value>&unknown;</value></param></params></methodResponse>",
        "<a></b>", "<methodResponse><params></params></methodResponse> trailing",
        String(repeating: "<value><array><data>", count: 200),
    ])
    func malformedAnswersAreTypedErrors(_ body: String) {
        #expect(throws: XMLRPCError.self) { try XMLRPC.decodeResponse(Array(body.utf8)) }
    }

    @Test func documentTypeDeclarationsAreRefusedSoNoEntityIsEverExpanded() {
        let billionLaughs = """
            <?xml version="1.0"?>
            <!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
            <methodResponse><params><param><value>&lol2;</value></param></params></methodResponse>
            """
        let external = """
            <?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
            <methodResponse><params><param><value>&xxe;</value></param></params></methodResponse>
            """
        for body in [billionLaughs, external] {
            #expect(throws: XMLRPCError.malformed("document type declarations are not accepted")) {
                try XMLRPC.decodeResponse(Array(body.utf8))
            }
        }
    }

    @Test func characterReferencesAndCDATAAreText() throws {
        let body = "<methodResponse><params><param><value><string>&#65;&#x42;<![CDATA[<c>]]>&amp;</string></value></param></params></methodResponse>"
        #expect(try XMLRPC.decodeResponse(Array(body.utf8)) == .string("AB<c>&"))
    }

    @Test func sha1MatchesKnownDigests() {
        #expect(SHA1.hex(of: Array("".utf8)) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hex(of: Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        let long = Array(String(repeating: "a", count: 1_000_000).utf8)
        #expect(SHA1.hex(of: long) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }
}

@Suite(.timeLimit(.minutes(1))) struct LegacyPolicyTests {
    let deadlines = LegacyPolicy.Deadlines(silentBuild: 100, aborting: 10)
    let expected = LegacyBuilderSnapshot.CurrentBuild(buildID: 7, attempt: 2, buildType: "binarypackage", cancelling: false,
                                                      runningSeconds: 5)

    func decide(_ status: LegacyStatus, expected: LegacyBuilderSnapshot.CurrentBuild?, abortSent: Bool = false,
                stalledFor: Double = 0, mayTakeWork: Bool = true) -> LegacyPolicy.Step {
        LegacyPolicy.decide(status, expected: expected, abortSent: abortSent, stalledFor: stalledFor,
                            mayTakeWork: mayTakeWork, deadlines: deadlines)
    }

    /// Progress is judged by the clock the follower is given: the same tail for the silent-build deadline is a
    /// wedged builder, any new output starts the count again, and ABORTING counts whatever its tail.
    @Test func aWedgedBuilderIsJudgedByTheInjectedClock() {
        var progress = LegacyProgress()
        var now = 5_000.0
        let building = LegacyReading(state: .building, buildID: "PACKAGEBUILD-7", logTail: Array("step 1".utf8))
        #expect(progress.observe(building, now: now) == 0)
        now += 60
        #expect(progress.observe(building, now: now) == 60)
        var moved = building
        moved.logTail = Array("step 2".utf8)
        #expect(progress.observe(moved, now: now + 1) == 0, "new output")
        now += 101
        let stalled = progress.observe(moved, now: now)
        #expect(stalled == 100)
        #expect(LegacyPolicy.decide(moved, expected: expected.expectation, abortSent: false, stalledFor: stalled,
                                    mayTakeWork: true, deadlines: deadlines)
                == .wedged("BUILDING PACKAGEBUILD-7 with no new output for 100 s"))
        var aborting = LegacyReading(state: .aborting, buildID: "PACKAGEBUILD-7", logTail: Array("a".utf8))
        #expect(progress.observe(aborting, now: now) == 0)
        aborting.logTail = Array("b".utf8)
        #expect(progress.observe(aborting, now: now + 10) == 10, "an aborting builder's tail is not progress")
    }

    /// What the polls saw is noted by the core for XML-RPC builders only, as heard from; an agent is not a
    /// legacy adapter's to describe.
    @Test func theStatesPollsSawAreTheCoresToNoteForLegacyBuildersOnly() {
        let standing = BuilderStanding(failures: 0, ok: true, notes: nil)
        let legacy = BuilderRecord(id: 1, name: "lp-1", kind: .xmlrpc, brokerUser: nil, active: true, manual: false,
                                   session: nil, lastSeq: 0, agentState: .idle, cleanStatus: .clean, standing: standing)
        let agent = BuilderRecord(id: 2, name: "a-1", kind: .agent, brokerUser: "a-1", active: true, manual: false,
                                  session: nil, lastSeq: 0, agentState: .idle, cleanStatus: .clean, standing: standing)
        var core = LifecycleCore(builders: [legacy, agent], builds: [], now: 1, leaseSeconds: 30)
        #expect(core.observedLegacy([(1, .building), (2, .building), (3, .idle)]) == [1])
        #expect(core.builders[1]?.agentState == .building && core.builders[1]?.seen == true)
        #expect(core.builders[2]?.agentState == .idle && core.builders[2]?.seen == false)
        #expect(core.changedBuilders.map(\.id) == [1])
    }

    @Test func anIdleUsableBuilderTakesWorkAndAManualOneWaits() {
        #expect(decide(LegacyStatus(state: .idle), expected: nil) == .takeJob)
        #expect(decide(LegacyStatus(state: .idle), expected: nil, mayTakeWork: false) == .wait)
    }

    @Test func theExpectedBuildIsFollowedAndCollected() {
        #expect(expected.cookie == "PACKAGEBUILD-7")
        #expect(decide(LegacyStatus(state: .building, buildID: "PACKAGEBUILD-7"), expected: expected) == .building(abort: false))
        #expect(decide(LegacyStatus(state: .waiting, buildID: "PACKAGEBUILD-7", buildStatus: "BuildStatus.DEPFAIL"),
                       expected: expected) == .collect(.depFail))
        #expect(decide(LegacyStatus(state: .waiting, buildID: "PACKAGEBUILD-7", buildStatus: "BuildStatus.WHAT"),
                       expected: expected) == .collect(.builderFail))
    }

    @Test func aCancelledBuildIsAbortedOnce() {
        var cancelling = expected
        cancelling.cancelling = true
        let status = LegacyStatus(state: .building, buildID: "PACKAGEBUILD-7")
        #expect(decide(status, expected: cancelling) == .building(abort: true))
        #expect(decide(status, expected: cancelling, abortSent: true) == .building(abort: false))
    }

    @Test func aBuilderThatLostItsBuildHasItRequeuedAndIsCleanedUp() {
        #expect(decide(LegacyStatus(state: .idle), expected: expected)
                == .lost(reason: "builder is idle, it lost PACKAGEBUILD-7", then: .none))
        #expect(decide(LegacyStatus(state: .building, buildID: "PACKAGEBUILD-9"), expected: expected)
                == .lost(reason: "builder runs PACKAGEBUILD-9, not PACKAGEBUILD-7", then: .abort))
        #expect(decide(LegacyStatus(state: .waiting, buildID: "PACKAGEBUILD-9"), expected: expected)
                == .lost(reason: "builder finished PACKAGEBUILD-9, not PACKAGEBUILD-7", then: .clean))
        #expect(decide(LegacyStatus(state: .waiting, buildID: "PACKAGEBUILD-9"), expected: nil) == .cleanup(.clean))
        #expect(decide(LegacyStatus(state: .building, buildID: "PACKAGEBUILD-9"), expected: nil) == .cleanup(.abort))
    }

    @Test func noProgressPastADeadlineIsAWedgedBuilder() {
        let building = LegacyStatus(state: .building, buildID: "PACKAGEBUILD-7")
        #expect(decide(building, expected: expected, stalledFor: 99) == .building(abort: false))
        #expect(decide(building, expected: expected, stalledFor: 100)
                == .wedged("BUILDING PACKAGEBUILD-7 with no new output for 100 s"))
        let aborting = LegacyStatus(state: .aborting, buildID: "PACKAGEBUILD-7")
        #expect(decide(aborting, expected: expected, stalledFor: 9) == .wait)
        #expect(decide(aborting, expected: expected, stalledFor: 10) == .wedged("ABORTING PACKAGEBUILD-7 for 10 s"))
    }

    @Test func statusAnswersAreChecked() {
        #expect(throws: XMLRPCError.self) { try LegacyStatus(.struct([:])) }
        #expect(throws: XMLRPCError.self) { try LegacyStatus(.struct(["builder_status": .string("BuilderStatus.NAPPING")])) }
        #expect(throws: XMLRPCError.self) { try LegacyStatus(.struct(["builder_status": .string("BuilderStatus.BUILDING")])) }
        #expect(throws: XMLRPCError.self) { try LegacyStatus(.string("BuilderStatus.IDLE")) }
    }
}

/// launchpad-buildd's `build()` arguments come from the build type (Launchpad's build behaviours).
@Suite(.timeLimit(.minutes(1))) struct LegacyBuildArgumentsTests {
    static func details(_ type: String, pocket: String = "security", archive: String = "private") -> LegacyDispatchDetails {
        LegacyDispatchDetails(buildType: type, distribution: "ubuntu", series: "noble", archTag: "amd64", pocket: pocket,
                              component: "universe", archivePurpose: archive, chroot: nil, sources: [])
    }

    @Test func aBinaryPackageBuildGetsItsArchivePocketAndComponent() {
        let arguments = LegacyBuildArguments.of(Self.details("binarypackage"))
        #expect(Set(arguments.keys) == ["arch_tag", "series", "distribution", "suite", "archive_private", "archives",
                                        "ogrecomponent", "archive_purpose", "build_debug_symbols", "arch_indep"])
        #expect(arguments["suite"] == .string("noble-security"))
        #expect(arguments["ogrecomponent"] == .string("universe"))
        #expect(arguments["archive_private"] == .bool(true))
        #expect(arguments["archive_purpose"] == .string("PRIVATE"))
        #expect(LegacyBuildArguments.of(Self.details("binarypackage", pocket: "release", archive: "primary"))["suite"]
                == .string("noble"))
        #expect(LegacyBuildArguments.of(Self.details("binarypackage", archive: "primary"))["archive_private"] == .bool(false))
    }

    @Test func otherBuildTypesGetTheCommonArgumentsOnly() {
        let arguments = LegacyBuildArguments.of(Self.details("translation-templates"))
        #expect(Set(arguments.keys) == ["arch_tag", "series", "distribution", "suite", "archive_private", "archives"])
    }
}
