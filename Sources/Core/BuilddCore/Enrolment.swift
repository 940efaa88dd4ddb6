/// Build machines that enrol themselves: the rules for join tokens, and how many builders the queue is short
/// of (what an autoscaler starts machines for).

/// A join token (`buildd-master token add NAME --role enrol --expires 1h --processor amd64`): good once, for a
/// limited time, for the processors it names. It grants nothing else: it is no API token, so no route but
/// `POST /v1/enrol` takes it.
public enum JoinToken {
    /// The longest a join token may be good for: a week. An operator who wants machines to enrol for longer
    /// makes new tokens; a token that leaks is good for little.
    public static let maxLifetimeSeconds = 7 * 86400

    public enum Verdict: Equatable, Sendable, CustomStringConvertible {
        case valid
        case expired
        /// It enrolled a machine already: a join token is good once.
        case used(by: String)

        public var description: String {
            switch self {
            case .valid: "valid"
            case .expired: "the join token has expired: ask an operator for a new one"
            case .used(let builder): "the join token was used already (it enrolled \(builder)): a join token is good once"
            }
        }
    }

    /// Whether a join token that expires at `expiresAt` (epoch seconds), used by `usedBy` if anyone, may enrol
    /// a machine at `now`. Used comes first: a spent token says so even after it expired.
    public static func judge(expiresAt: Double, usedBy: String?, now: Double) -> Verdict {
        if let usedBy { return .used(by: usedBy) }
        return now < expiresAt ? .valid : .expired
    }

    /// Why a machine may not enrol as `name` for `processors` with a token for `allowed`, or nil: it may serve
    /// only processors the token names (none named: all the token's).
    public static func processorsProblem(asked: [String], allowed: [String]) -> String? {
        let extra = Set(asked).subtracting(allowed)
        return extra.isEmpty ? nil : "the join token is not for \(extra.sorted().joined(separator: ", ")) (it is for \(allowed.sorted().joined(separator: ", ")))"
    }
}

/// Builders a group of waiting builds is short of: the builds of one processor and one set of requirements
/// that no idle builder could start now.
public struct BuilderShortfall: Equatable, Sendable {
    public var processor: String
    public var requirements: BuildRequirements
    public var waiting: Int
    /// Idle builders given to this group (each idle builder counts for one group only).
    public var idleBuilders: Int
    public var short: Int { max(0, waiting - idleBuilders) }

    public init(processor: String, requirements: BuildRequirements, waiting: Int, idleBuilders: Int) {
        self.processor = processor
        self.requirements = requirements
        self.waiting = waiting
        self.idleBuilders = idleBuilders
    }
}

public enum BuilderDemand {
    /// Waiting builds of one processor with one set of requirements.
    public struct Waiting: Equatable, Sendable {
        public var processor: String
        public var requirements: BuildRequirements
        public var count: Int

        public init(processor: String, requirements: BuildRequirements, count: Int) {
            self.processor = processor
            self.requirements = requirements
            self.count = count
        }
    }

    /// An idle builder (``BuilderAvailability/takesWork``): its processors and what it offers.
    public struct Idle: Equatable, Sendable {
        public var processors: Set<String>
        public var placement: BuilderPlacement

        public init(processors: Set<String>, placement: BuilderPlacement) {
            self.processors = processors
            self.placement = placement
        }
    }

    /// For every group of waiting builds, how many of the idle builders could start them (by ``Placement``)
    /// and how many builders it is short of. Each idle builder is counted for one group only: the groups
    /// fewest builders can serve are served first, so a builder that could take several kinds of build does
    /// not hide the shortfall of the group that only it could serve.
    public static func shortfall(waiting: [Waiting], idle: [Idle]) -> [BuilderShortfall] {
        let groups = waiting.filter { $0.count > 0 }
        func capable(_ group: Waiting, _ builder: Idle) -> Bool {
            builder.processors.contains(group.processor) && Placement.mayTake(builder.placement, group.requirements)
        }
        let order = groups.indices.sorted { a, b in
            let left = idle.filter { capable(groups[a], $0) }.count
            let right = idle.filter { capable(groups[b], $0) }.count
            return left != right ? left < right : key(groups[a]) < key(groups[b])
        }
        var free = Array(repeating: true, count: idle.count)
        var given = Array(repeating: 0, count: groups.count)
        for index in order {
            for (builder, candidate) in idle.enumerated() where free[builder] && given[index] < groups[index].count {
                if capable(groups[index], candidate) {
                    free[builder] = false
                    given[index] += 1
                }
            }
        }
        return groups.indices.map {
            BuilderShortfall(processor: groups[$0].processor, requirements: groups[$0].requirements,
                             waiting: groups[$0].count, idleBuilders: given[$0])
        }.sorted { key($0) < key($1) }
    }

    /// The constraint set as a metric label: `virtualized`, `not-virtualized`, with `+gpu+large` after it.
    public static func label(_ requirements: BuildRequirements) -> String {
        ([requirements.virtualized ? "virtualized" : "not-virtualized"] + requirements.constraints.sorted())
            .joined(separator: "+")
    }

    private static func key(_ group: Waiting) -> String { group.processor + " " + label(group.requirements) }
    private static func key(_ shortfall: BuilderShortfall) -> String {
        shortfall.processor + " " + label(shortfall.requirements)
    }
}
