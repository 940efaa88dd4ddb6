@testable import BuilddMasterKit
import BuilddShared
import Foundation
import Testing

/// The access rules of ``Access`` and the builder history of the core, and the schema's lists that must
/// say the same as the Swift that states them.
@Suite(.timeLimit(.minutes(1))) struct AccessRulesTests {
    @Test func eachRoleMayDoWhatTheRolesBelowItMay() {
        #expect(Role.allCases == [.viewer, .submitter, .operator, .admin])
        for action in Action.allCases {
            let allowed = Role.allCases.filter { Access.allows($0, action, anonymousRead: true) }
            // Once a role may, every role above it may.
            if let first = allowed.first { #expect(allowed == Role.allCases.filter { $0 >= first }, "\(action)") }
            #expect(!allowed.isEmpty, "\(action) is allowed to nobody")
        }
        #expect(Access.allows(.viewer, .readPrivate, anonymousRead: true))
        #expect(!Access.allows(.viewer, .submit, anonymousRead: true))
        #expect(Access.allows(.submitter, .submit, anonymousRead: true))
        #expect(!Access.allows(.submitter, .cancel, anonymousRead: true))
        for action in [Action.cancel, .retry, .rescore, .changeBuilder] {
            #expect(Access.allows(.operator, action, anonymousRead: true))
        }
        #expect(!Access.allows(.operator, .manageTokens, anonymousRead: true))
        #expect(Access.allows(.admin, .manageTokens, anonymousRead: true))
    }

    @Test func noTokenReadsPublicBuildsOnlyAndOnlyWhenAnonymousReadingIsOn() {
        for action in Action.allCases where action != .read {
            #expect(!Access.allows(nil, action, anonymousRead: true), "\(action) without a token")
        }
        #expect(Access.allows(nil, .read, anonymousRead: true))
        #expect(!Access.allows(nil, .read, anonymousRead: false))
        #expect(Access.allows(.viewer, .read, anonymousRead: false))
    }

    @Test func aPrivateArchiveIsVisibleToViewersAndAbove() {
        #expect(Access.visibleArchives(to: nil) == [.primary, .copy])
        for role in Role.allCases { #expect(Access.visibleArchives(to: role) == ArchivePurpose.allCases) }
        #expect(!Access.mayView(archive: .private, role: nil))
    }

    @Test func aTokenLivesUntilItsExpiry() {
        #expect(Access.tokenIsLive(expiresAt: nil, now: 1e12))
        #expect(Access.tokenIsLive(expiresAt: 100, now: 99.9))
        #expect(!Access.tokenIsLive(expiresAt: 100, now: 100))
        #expect(!Access.tokenIsLive(expiresAt: 100, now: 101))
    }

    /// The schema's CHECK lists are the Swift enums': a role or a history kind added on one side only fails here.
    @Test func theSchemaKnowsEveryRoleAndEveryBuilderHistoryKind() throws {
        let roles = try #require(Migrations.all.first { $0.name == "0006_roles_and_audit" }?.sql)
        // The history kinds as the latest migration that states them says (0010 added `placement`).
        let kinds = try #require(Migrations.all.last { $0.sql.contains("builder_event") && $0.sql.contains("CHECK (kind IN (") }?.sql)
        func quoted(after marker: String, in sql: String) throws -> [String] {
            let start = try #require(sql.range(of: marker)?.upperBound)
            let end = try #require(sql[start...].range(of: "))")?.lowerBound)
            return sql[start..<end].split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
            }
        }
        #expect(try quoted(after: "CHECK (role IN (", in: roles) == Role.allCases.map(\.rawValue))
        #expect(try Set(quoted(after: "CHECK (kind IN (", in: kinds)) == Set(BuilderEventKind.allCases.map(\.rawValue)))
    }

    @Test func theFarmsChangesOfABuilderAreItsHistory() {
        let ok = BuilderStanding(failures: 0, ok: true, notes: nil)
        var counted = ok
        counted.countFailure("lease expired: no heartbeat")
        #expect(BuilderHistoryEntry.farmChange(of: "b1", from: ok, to: counted)
                == [BuilderHistoryEntry(builder: "b1", kind: .failure, actor: nil, reason: "1 in a row: lease expired: no heartbeat")])
        var broken = BuilderStanding(failures: FailureThresholds.builder - 1, ok: true, notes: nil)
        let before = broken
        broken.countFailure("did not confirm an abort")
        #expect(BuilderHistoryEntry.farmChange(of: "b1", from: before, to: broken).map(\.kind) == [.failure, .failed])
        var disabled = ok
        disabled.disable("status() fault")
        #expect(BuilderHistoryEntry.farmChange(of: "b1", from: ok, to: disabled)
                == [BuilderHistoryEntry(builder: "b1", kind: .failed, actor: nil, reason: "status() fault")])
        // A success, or faults forgiven, are not history.
        var forgiven = counted
        forgiven.countIdleFault("status() timed out")
        let faulted = forgiven
        forgiven.forgiveIdleFaults()
        #expect(forgiven.failures == 1)
        #expect(BuilderHistoryEntry.farmChange(of: "b1", from: faulted, to: forgiven).isEmpty)
        // lastFailure is not part of a standing: equal standings are stored alike.
        #expect(counted == BuilderStanding(failures: 1, ok: true, notes: nil))
    }
}

/// What `serve` warns about at start: every hop left in clear.
@Suite(.timeLimit(.minutes(1))) struct MasterWarningTests {
    @Test func eachHopInClearIsWarnedAboutAndASecuredOneIsNot() {
        var plain = MasterConfiguration(databaseURL: "postgresql://buildd@db.example.org/buildd",
                                        brokerURL: "amqp://m:pw@rmq1:5672/buildd, amqps://m:pw@rmq2:5671/buildd")
        let warnings = plain.warnings
        #expect(warnings.count == 3, "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("no TLS") })
        #expect(warnings.contains { $0.hasPrefix("plain amqp://") })
        #expect(warnings.contains { $0.contains("sslmode=verify-full") })
        plain.publicURL = "https://proxy.example.org"
        #expect(!plain.warnings.contains { $0.hasPrefix("no TLS") }, "behind a TLS proxy")

        var secured = MasterConfiguration(databaseURL: "postgresql://buildd@db.example.org/buildd?sslmode=verify-full",
                                          brokerURL: "amqps://m:pw@rmq1:5671/buildd?cacert=/etc/buildd/ca.pem")
        secured.tls = ("/etc/buildd/master.pem", "/etc/buildd/master.key")
        #expect(secured.warnings.isEmpty, "\(secured.warnings)")
        #expect(secured.artifactBaseURL.hasPrefix("https://"))
        // A database on this machine needs no TLS.
        let local = MasterConfiguration(databaseURL: "postgresql://postgres@127.0.0.1:55432/postgres",
                                        brokerURL: "amqps://m@h/")
        #expect(!local.warnings.contains { $0.contains("sslmode") })
    }
}

/// ``NoiseRule``: a flood costs a bounded number of lines, each saying how many refusals it stands for.
@Suite(.timeLimit(.minutes(1))) struct NoiseRuleTests {
    @Test func aFloodIsLoggedBoundedAndBreaksTheBuilderOnce() {
        var tally: NoiseRule.Tally?
        var lines: [Int] = [], floods = 0
        for index in 0..<250 {
            let verdict = NoiseRule.note(&tally, now: Double(index) * 0.1)  // 250 refusals in 25 s
            if verdict.log { lines.append(verdict.standsFor) }
            if verdict.flood { floods += 1 }
        }
        #expect(lines == Array(repeating: 1, count: NoiseRule.linesPerMinute), "the first lines of the minute, one each")
        #expect(floods == 1, "the builder is marked once per window")
        // The next window's first line stands for everything not logged before it.
        let next = NoiseRule.note(&tally, now: 61)
        #expect(next.log && next.standsFor == 250 - NoiseRule.linesPerMinute + 1)
        #expect(!next.flood)
    }

    @Test func aFewRefusalsAreEachLoggedAndBreakNothing() {
        var tally: NoiseRule.Tally?
        for index in 0..<30 {
            let verdict = NoiseRule.note(&tally, now: Double(index) * 10)  // one every 10 s
            if index % 6 < NoiseRule.linesPerMinute { #expect(verdict.log && verdict.standsFor == 1) }
            #expect(!verdict.flood)
        }
    }
}

/// ``UploadDecision``: a result file is written once per attempt.
@Suite(.timeLimit(.minutes(1))) struct UploadDecisionTests {
    @Test func aStoredNameTakesTheSameBytesAgainAndRefusesOthers() {
        let stored = FileDigest(name: "hello.deb", sha256: String(repeating: "a", count: 64), size: 10)
        #expect(UploadDecision.of(name: "hello.deb", sha256: stored.sha256, size: 10, existing: nil) == .record)
        #expect(UploadDecision.of(name: "hello.deb", sha256: stored.sha256, size: 10, existing: stored) == .alreadyStored)
        guard case .refused(let why) = UploadDecision.of(name: "hello.deb", sha256: String(repeating: "b", count: 64),
                                                         size: 10, existing: stored) else {
            Issue.record("other bytes under a stored name were taken")
            return
        }
        #expect(why.contains("written once"))
        if case .refused = UploadDecision.of(name: "hello.deb", sha256: stored.sha256, size: 11, existing: stored) {} else {
            Issue.record("another size under a stored name was taken")
        }
    }
}

/// ``AttemptCredential``: an attempt's sources and uploads open to the key its builder declared on accept,
/// and to nothing else.
@Suite(.timeLimit(.minutes(1))) struct AttemptCredentialTests {
    static let key = String(repeating: "ab", count: 32)
    static let other = String(repeating: "cd", count: 32)

    @Test func onlyTheDeclaredKeyOfTheCurrentAcceptedAttemptIsAdmitted() {
        func judge(_ requested: Int32 = 2, state: QueueRecord.State? = .running, declared: String? = Self.key,
                   presented: String = Self.key) -> AttemptCredential.Verdict {
            AttemptCredential.judge(requested: requested, current: 2, state: state, declared: declared, presented: presented)
        }
        #expect(judge() == .admitted)
        #expect(judge(state: .cancelling) == .admitted, "a cancelled build still uploads its log")
        #expect(judge(presented: Self.other) == .refused, "another builder's key")
        #expect(judge(presented: String(Self.key.dropLast())) == .refused)
        #expect(judge(1) == .refused, "an old attempt")
        #expect(judge(3) == .refused, "an attempt not made yet")
        #expect(judge(state: nil) == .refused, "no queue entry: the build ended")
        #expect(judge(state: .waiting) == .refused)
        #expect(judge(declared: nil) == .refused, "no key declared")
        // A claim nobody accepted yet admits no one, whatever the key: not even one equal to the stored digest.
        #expect(judge(state: .dispatched) == .notAcceptedYet)
        #expect(judge(state: .dispatched, declared: nil) == .notAcceptedYet)
        #expect(judge(1, state: .dispatched) == .refused)
    }

    /// The key is bound by the accept that stands: a second builder's accept of the same attempt, refused by
    /// the core, does not rebind it; a requeue lets it go.
    @Test func theAcceptThatStandsBindsTheKeyAndNoOtherDoes() {
        var core = LifecycleCore(
            builders: [LifecycleCoreTests.builder(1, "a1"), LifecycleCoreTests.builder(2, "a2")],
            builds: [LifecycleCoreTests.dispatched(10, at: 0)], now: 1, leaseSeconds: 30)
        #expect(core.apply(LifecycleCoreTests.report("a1", 1, .accepted(LifecycleCoreTests.ref(10), uploadKey: Self.key)))
                == .applied("build 10 attempt 1 started on a1"))
        #expect(core.builds[10]?.queue?.uploadKey == Self.key)
        let second = core.apply(LifecycleCoreTests.report("a2", 1, .accepted(LifecycleCoreTests.ref(10), uploadKey: Self.other)))
        guard case .abort = second else {
            Issue.record("a second accept of a running attempt stood: \(second)")
            return
        }
        #expect(core.builds[10]?.queue?.uploadKey == Self.key)
        // a1 forgets the build (restarted): requeued, and the digest is cleared with the claim.
        _ = core.apply(LifecycleCoreTests.report("a1", 2, .hello(.idle, current: nil)))
        #expect(core.builds[10]?.queue?.state == .waiting && core.builds[10]?.queue?.dispatchCleared == true)
    }
}
