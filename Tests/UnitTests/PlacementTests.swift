@testable import BuilddCore
import Testing

/// Launchpad's candidate rules as ``Placement`` states them, the assignment of builds to idle builders,
/// the reason a waiting build gives, and the core refusing an accept that breaks them.
@Suite(.timeLimit(.minutes(1))) struct PlacementRuleTests {
    static let plain = BuilderPlacement.plain
    static let bare = BuilderPlacement(virtualized: false)
    static let big = BuilderPlacement(openResources: ["large"])
    static let gpu = BuilderPlacement(restrictedResources: ["gpu"])
    static let gpuBig = BuilderPlacement(openResources: ["large"], restrictedResources: ["gpu"])
    static let twoRestricted = BuilderPlacement(restrictedResources: ["gpu", "fpga"])

    static func needs(_ constraints: Set<String> = [], virtualized: Bool = true) -> BuildRequirements {
        BuildRequirements(virtualized: virtualized, constraints: constraints)
    }

    /// (builder, build, may take): every rule alone and together.
    static let table: [(BuilderPlacement, BuildRequirements, Bool)] = [
        (plain, needs(), true),
        (plain, needs(["gpu"]), false),
        (plain, needs(virtualized: false), false),
        (bare, needs(), false),
        (bare, needs(virtualized: false), true),
        (bare, needs(["large"], virtualized: false), false),
        (big, needs(), true),
        (big, needs(["large"]), true),
        (big, needs(["large", "gpu"]), false),
        (gpu, needs(), false),
        (gpu, needs(["gpu"]), true),
        (gpu, needs(["gpu", "large"]), false),
        (gpuBig, needs(["gpu", "large"]), true),
        (gpuBig, needs(["gpu"]), true),
        (gpuBig, needs(["large"]), false),
        (gpuBig, needs(), false),
        (twoRestricted, needs(["gpu"]), false),
        (twoRestricted, needs(["gpu", "fpga"]), true),
        (BuilderPlacement(virtualized: false, restrictedResources: ["gpu"]), needs(["gpu"], virtualized: false), true),
        (BuilderPlacement(virtualized: false, restrictedResources: ["gpu"]), needs(["gpu"]), false),
    ]

    @Test func launchpadsRules() {
        for (builder, build, expected) in Self.table {
            #expect(Placement.mayTake(builder, build) == expected, "\(builder.description) / \(build.description)")
        }
        #expect(Placement.refusal(of: Self.bare, for: Self.needs()) == .virtualization(buildRequires: true))
        #expect(Placement.refusal(of: Self.plain, for: Self.needs(["gpu", "fpga"])) == .missingResources(["fpga", "gpu"]))
        #expect(Placement.refusal(of: Self.twoRestricted, for: Self.needs(["gpu"])) == .restrictedNotAsked(["fpga"]))
        #expect("\(PlacementRefusal.restrictedNotAsked(["gpu"]))" == "the builder keeps gpu for builds that ask for it")
    }

    /// The shared queues carry exactly what a plain builder may take, and only plain builders read them.
    @Test func theSharedQueuesAreThePlainBuildersExactly() {
        let builders = Set(Self.table.map(\.0).map(\.description))
        for (builder, build, _) in Self.table {
            if builder.takesSharedQueue(reset: .none) { #expect(Placement.mayTake(builder, build) == build.goesToSharedQueue) }
        }
        #expect(builders.count > 5)
        #expect(Self.plain.takesSharedQueue(reset: .none) && !Self.big.takesSharedQueue(reset: .none)
                && !Self.bare.takesSharedQueue(reset: .none))
        // A plain builder the master resets after each build takes its jobs addressed to it.
        #expect(!Self.plain.takesSharedQueue(reset: ResetPlan(method: .command, target: "revert")))
        #expect(BuildRequirements.plain.goesToSharedQueue && !Self.needs(virtualized: false).goesToSharedQueue)
    }

    @Test func aPrivateArchivesBuildAlwaysRequiresVirtualization() {
        #expect(BuildRequirements.submitted(archivePrivate: true, virtualized: false, constraints: []).virtualized)
        #expect(!BuildRequirements.submitted(archivePrivate: false, virtualized: false, constraints: []).virtualized)
        #expect(BuildRequirements.submitted(archivePrivate: true, virtualized: true, constraints: ["gpu"])
                == Self.needs(["gpu"]))
    }

    /// Each builder, in order, takes the best candidate it may take that no builder before it took.
    @Test func eachIdleBuilderTakesTheBestBuildItMayTake() {
        let candidates: [(id: Int, requirements: BuildRequirements)] = [
            (1, Self.needs(["gpu"])), (2, Self.needs()), (3, Self.needs(["large"])), (4, Self.needs()),
            (5, Self.needs(virtualized: false)),
        ]
        let pairs = Placement.assign(builders: [("big", Self.big), ("gpu", Self.gpu), ("big2", Self.big),
                                                ("gpu2", Self.gpu), ("bare", Self.bare)], candidates: candidates)
        #expect(pairs.map { "\($0.builder)=\($0.candidate)" } == ["big=2", "gpu=1", "big2=3", "bare=5"])
        #expect(Placement.assign(builders: [("plain", Self.plain)], candidates: [(1, Self.needs(["gpu"]))]).isEmpty)
    }

    @Test func aWaitingBuildSaysWhy() {
        func candidate(_ name: String, _ placement: BuilderPlacement, _ availability: BuilderAvailability) -> Placement.Candidate {
            Placement.Candidate(name: name, placement: placement, availability: availability)
        }
        #expect(Placement.whyWaiting(Self.needs(), processor: "riscv64", builders: []) == "no builder builds for riscv64")
        #expect(Placement.whyWaiting(Self.needs(["gpu"]), processor: "amd64", builders: [
            candidate("a", Self.plain, .idle), candidate("b", Self.big, .idle), candidate("c", Self.bare, .idle),
        ]) == "no builder of amd64 may take it: the builder does not offer gpu (2 of 3)")
        #expect(Placement.whyWaiting(Self.needs(["gpu"]), processor: "amd64", builders: [
            candidate("a", Self.plain, .idle), candidate("g", Self.gpu, .building), candidate("h", Self.gpu, .failed),
        ]) == "none of the 2 builder(s) that may take it is idle (1 building, 1 failed)")
        #expect(Placement.whyWaiting(Self.needs(["gpu"]), processor: "amd64", builders: [
            candidate("g", Self.gpu, .idle)]) == nil)
    }

    @Test func resourceNames() {
        for good in ["gpu", "large", "fast-disk", "x86-64-v3", "a.b_c+d"] { #expect(Placement.isValidResource(good), "\(good)") }
        for bad in ["", "GPU", "fast disk", "-gpu", "gpu,large", String(repeating: "a", count: 65), "gpü"] {
            #expect(!Placement.isValidResource(bad), "\(bad)")
        }
    }

    /// The core refuses an accept that breaks the rule, and one of a job addressed to another builder,
    /// whatever route the job took; the builder the job was for starts it.
    @Test func theCoreRefusesAnAcceptThePlacementForbids() {
        func builder(_ id: Int, _ placement: BuilderPlacement) -> BuilderRecord {
            var record = BuilderRecord(id: id, name: "b\(id)", kind: .agent, brokerUser: nil, active: true, manual: false,
                                       session: nil, lastSeq: 0, agentState: .idle, cleanStatus: .clean,
                                       standing: BuilderStanding(failures: 0, ok: true, notes: nil))
            record.placement = placement
            return record
        }
        func build(_ requirements: BuildRequirements, addressedTo: Int? = nil) -> BuildRecord {
            var record = BuildRecord(id: 7, attempt: 1, status: .needsBuild, builderID: nil, job: JobStanding(failures: 0, notes: nil),
                                     result: nil, logName: nil, logSHA256: nil, startedAt: nil,
                                     queue: QueueRecord(.dispatched(since: 100, to: addressedTo)))
            record.requirements = requirements
            return record
        }
        func accept(_ builder: BuilderRecord, _ build: BuildRecord) -> (EventOutcome, BuildStatus) {
            var core = LifecycleCore(builders: [builder], builds: [build], now: 101, leaseSeconds: 30)
            let outcome = core.apply(BuilderReport(
                builder: builder.name, session: "s", seq: 1,
                event: .accepted(AttemptRef(build: 7, attempt: 1), uploadKey: String(repeating: "a", count: 64)),
                sender: .agent(user: nil)))
            return (outcome, core.builds[7]!.status)
        }
        let privateBuild = build(Self.needs())
        let (refused, status) = accept(builder(1, Self.bare), privateBuild)
        #expect(refused == .abort(buildID: 7, attempt: 1, reason: "build 7: the build requires a virtualized builder"))
        #expect(status == .needsBuild)
        let (gpuRefused, _) = accept(builder(1, Self.plain), build(Self.needs(["gpu"])))
        #expect(gpuRefused == .abort(buildID: 7, attempt: 1, reason: "build 7: the builder does not offer gpu"))
        let (other, _) = accept(builder(2, Self.gpu), build(Self.needs(["gpu"]), addressedTo: 3))
        #expect(other == .abort(buildID: 7, attempt: 1, reason: "build 7: the job was sent to another builder"))
        let (taken, started) = accept(builder(3, Self.gpu), build(Self.needs(["gpu"]), addressedTo: 3))
        #expect(started == .building, "\(taken)")
    }
}
