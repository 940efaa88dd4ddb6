/// Where a build may run: Launchpad's candidate rules (`findBuildCandidates` by processor, virtualization
/// and resources), stated once. The dispatcher's claims select candidates in SQL with ``sqlCondition``
/// (a test runs both over one table of cases), the assignment of builds to builders is ``assign``, and
/// the core refuses an accept that breaks the rule whatever route the job took.

/// What a builder offers.
public struct BuilderPlacement: Equatable, Sendable, Codable {
    /// A virtualized builder takes only builds that require virtualization, and a non-virtualized one only
    /// builds that do not (Launchpad keeps the two farms apart: a machine that ran an untrusted archive's
    /// build never runs a trusted one's).
    public var virtualized: Bool
    /// Resources any build may ask for (`--resources large,fast-disk`).
    public var openResources: Set<String>
    /// Resources kept for the builds that ask for them: a builder with any takes only builds that ask for
    /// all of them (`--restricted-resources gpu`).
    public var restrictedResources: Set<String>

    public init(virtualized: Bool = true, openResources: Set<String> = [], restrictedResources: Set<String> = []) {
        self.virtualized = virtualized
        self.openResources = openResources
        self.restrictedResources = restrictedResources
    }

    /// A virtualized builder with no resources: it takes exactly the plain builds (``BuildRequirements/plain``)
    /// and takes them from its processors' shared job queues. Every other builder gets its jobs addressed to
    /// it, chosen by the master (``Placement/assign(builders:candidates:)``).
    public static let plain = BuilderPlacement()

    /// Whether it takes its jobs from its processors' shared queues: plain, and not reset by the master
    /// after each build (such a builder may be idle and DIRTY, so its jobs are addressed to it when CLEAN).
    public func takesSharedQueue(reset: ResetPlan) -> Bool { self == .plain && !reset.resets(virtualized: virtualized) }

    /// What makes it not a placement an operator may set (a bad name, a resource both open and
    /// restricted), or nil.
    public var problem: String? {
        if let bad = Placement.namesProblem(openResources.union(restrictedResources), what: "resource") { return bad }
        let both = openResources.intersection(restrictedResources)
        return both.isEmpty ? nil : "\(both.sorted().joined(separator: ", ")) cannot be both open and restricted"
    }

    /// `virtualized, resources a,b, restricted gpu`, as `builder show` and its history say it.
    public var description: String {
        var parts = [virtualized ? "virtualized" : "not virtualized"]
        if !openResources.isEmpty { parts.append("resources \(openResources.sorted().joined(separator: ","))") }
        if !restrictedResources.isEmpty { parts.append("restricted \(restrictedResources.sorted().joined(separator: ","))") }
        return parts.joined(separator: ", ")
    }

    enum CodingKeys: String, CodingKey {
        case virtualized
        case openResources = "resources"
        case restrictedResources = "restricted_resources"
    }
}

/// What a build needs of its builder.
public struct BuildRequirements: Equatable, Sendable, Codable {
    public var virtualized: Bool
    /// Resources the builder must offer (open or restricted).
    public var constraints: Set<String>

    public init(virtualized: Bool = true, constraints: Set<String> = []) {
        self.virtualized = virtualized
        self.constraints = constraints
    }

    /// Requires virtualization and asks for nothing: what a submit gets by default (Launchpad's
    /// `require_virtualized`), and what the shared job queues carry.
    public static let plain = BuildRequirements()

    /// A submitted build's requirements: a private archive's build always requires virtualization.
    public static func submitted(archivePrivate: Bool, virtualized: Bool, constraints: Set<String>) -> BuildRequirements {
        BuildRequirements(virtualized: virtualized || archivePrivate, constraints: constraints)
    }

    public var goesToSharedQueue: Bool { self == .plain }

    /// `virtualized, constraints gpu`, as `build show` says it.
    public var description: String {
        var parts = [virtualized ? "virtualized" : "not virtualized"]
        if !constraints.isEmpty { parts.append("constraints \(constraints.sorted().joined(separator: ","))") }
        return parts.joined(separator: ", ")
    }
}

/// Why a builder may not take a build.
public enum PlacementRefusal: Equatable, Sendable, CustomStringConvertible {
    /// The build requires virtualization and the builder is not virtualized, or the other way round.
    case virtualization(buildRequires: Bool)
    /// The build asks for resources the builder does not offer.
    case missingResources([String])
    /// The builder keeps restricted resources the build does not ask for.
    case restrictedNotAsked([String])

    public var description: String {
        switch self {
        case .virtualization(let requires):
            requires ? "the build requires a virtualized builder" : "the build requires a non-virtualized builder"
        case .missingResources(let names): "the builder does not offer \(names.joined(separator: ", "))"
        case .restrictedNotAsked(let names):
            "the builder keeps \(names.joined(separator: ", ")) for builds that ask for it"
        }
    }
}

public enum Placement {
    /// Whether `builder` may take `build`; nil when it may.
    public static func refusal(of builder: BuilderPlacement, for build: BuildRequirements) -> PlacementRefusal? {
        if build.virtualized != builder.virtualized { return .virtualization(buildRequires: build.virtualized) }
        let missing = build.constraints.subtracting(builder.openResources.union(builder.restrictedResources))
        if !missing.isEmpty { return .missingResources(missing.sorted()) }
        let unasked = builder.restrictedResources.subtracting(build.constraints)
        if !unasked.isEmpty { return .restrictedNotAsked(unasked.sorted()) }
        return nil
    }

    public static func mayTake(_ builder: BuilderPlacement, _ build: BuildRequirements) -> Bool {
        refusal(of: builder, for: build) == nil
    }

    /// The rule of ``refusal(of:for:)`` as a SQL condition: true when the builder row `b` (columns
    /// `virtualized`, `open_resources`, `restricted_resources`) may take the queue entry `q` (columns
    /// `virtualized`, `constraints`); text arrays, compared as sets.
    public static func sqlCondition(build q: String = "q", builder b: String = "b") -> String {
        "(\(q).virtualized = \(b).virtualized AND \(q).constraints <@ (\(b).open_resources || \(b).restricted_resources) "
            + "AND \(b).restricted_resources <@ \(q).constraints)"
    }

    /// ``BuilderPlacement/takesSharedQueue(reset:)`` as a SQL condition on the builder row `b`.
    public static func sqlTakesSharedQueue(builder b: String = "b") -> String {
        "(\(b).virtualized AND \(b).open_resources = '{}' AND \(b).restricted_resources = '{}' AND NOT \(BuilderReset.sqlResets(builder: b)))"
    }

    /// ``BuildRequirements/goesToSharedQueue`` as a SQL condition on the queue entry `q` (the predicate of
    /// the index the shared claim walks).
    public static func sqlGoesToSharedQueue(build q: String = "q") -> String {
        "(\(q).virtualized AND \(q).constraints = '{}')"
    }

    /// Which build each idle builder takes, Launchpad's way: builders in the order given, each taking the
    /// best candidate it may take that no builder before it took. `candidates` are in score order, best
    /// first. Returns (builder, candidate) pairs in the builders' order.
    public static func assign<Builder, Candidate: Hashable>(
        builders: [(id: Builder, placement: BuilderPlacement)],
        candidates: [(id: Candidate, requirements: BuildRequirements)]
    ) -> [(builder: Builder, candidate: Candidate)] {
        var taken: Set<Candidate> = []
        var pairs: [(builder: Builder, candidate: Candidate)] = []
        for builder in builders {
            guard let pick = candidates.first(where: { !taken.contains($0.id) && mayTake(builder.placement, $0.requirements) })
            else { continue }
            taken.insert(pick.id)
            pairs.append((builder.id, pick.id))
        }
        return pairs
    }

    /// A builder of the build's processor, as "why is it waiting" sees it.
    public struct Candidate: Equatable, Sendable {
        public var name: String
        public var placement: BuilderPlacement
        public var availability: BuilderAvailability

        public init(name: String, placement: BuilderPlacement, availability: BuilderAvailability) {
            self.name = name
            self.placement = placement
            self.availability = availability
        }
    }

    /// Why a waiting build has no builder, for `build show` and the queue page: nil when some builder
    /// that may take it is idle (it is next in line, or behind better builds).
    public static func whyWaiting(_ build: BuildRequirements, processor: String, builders: [Candidate]) -> String? {
        if builders.isEmpty { return "no builder builds for \(processor)" }
        let able = builders.filter { mayTake($0.placement, build) }
        if able.contains(where: { $0.availability.takesWork }) { return nil }
        if able.isEmpty {
            // Name the refusal most builders give: the one thing most likely to be missing.
            let reasons = builders.compactMap { refusal(of: $0.placement, for: build)?.description }
            let counts = Dictionary(reasons.map { ($0, 1) }, uniquingKeysWith: +)
            let top = counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.first!
            return "no builder of \(processor) may take it: \(top.key) (\(top.value) of \(builders.count))"
        }
        let states = Dictionary(able.map { ($0.availability.rawValue, 1) }, uniquingKeysWith: +)
            .sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        return "none of the \(able.count) builder(s) that may take it is idle (\(states))"
    }

    /// A resource name as builders and builds give it: a name of the farm's (``Names``).
    public static func isValidResource(_ name: String) -> Bool { Names.isValid(name) }

    /// What is wrong with resource names given as `what` ("resource", "constraint"), or nil.
    public static func namesProblem(_ names: some Sequence<String>, what: String) -> String? {
        names.sorted().first { !isValidResource($0) }.map {
            "invalid \(what) '\($0)': a resource name is [a-z0-9][a-z0-9.+_-]{0,63}"
        }
    }
}
