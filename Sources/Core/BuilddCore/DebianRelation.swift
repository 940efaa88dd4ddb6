/// Debian package relations as `Build-Depends` states them (deb-control(5)): clauses joined by `,`, each
/// of alternatives joined by `|`, each alternative `package[:arch] [(op version)] [[arch ...]] [<profile ...>]`,
/// and whether an archive's packages satisfy them. A dependency wait ends when its missing relations are
/// satisfiable; this is the rule that says so.
public struct DebianRelation: Equatable, Sendable, CustomStringConvertible {
    public enum Operator: String, Sendable, CaseIterable {
        case earlier = "<<", earlierOrEqual = "<=", equal = "=", laterOrEqual = ">=", later = ">>"

        func holds(_ order: Int) -> Bool {
            switch self {
            case .earlier: order < 0
            case .earlierOrEqual: order <= 0
            case .equal: order == 0
            case .laterOrEqual: order >= 0
            case .later: order > 0
            }
        }
    }

    public var package: String
    /// `any`, `native` or an architecture, after the package's name.
    public var qualifier: String?
    public var constraint: (op: Operator, version: DebianVersion)?
    /// `[amd64 arm64]` or `[!i386]`: the architectures it applies on (all negated or none).
    public var architectures: [String] = []
    public var negatedArchitectures = false
    /// `<!nocheck> <stage1>`: it applies when one group's terms all hold; a term `!x` holds with `x` not
    /// active. No group: it always applies.
    public var profiles: [[(negated: Bool, name: String)]] = []

    public static func == (lhs: DebianRelation, rhs: DebianRelation) -> Bool { lhs.description == rhs.description }

    public var description: String {
        var text = package + (qualifier.map { ":\($0)" } ?? "")
        if let constraint { text += " (\(constraint.op.rawValue) \(constraint.version))" }
        if !architectures.isEmpty {
            text += " [" + architectures.map { (negatedArchitectures ? "!" : "") + $0 }.joined(separator: " ") + "]"
        }
        for group in profiles { text += " <" + group.map { ($0.negated ? "!" : "") + $0.name }.joined(separator: " ") + ">" }
        return text
    }

    /// Whether it applies when building on `architecture` with no build profile active.
    public func applies(on architecture: String) -> Bool {
        if !architectures.isEmpty {
            let listed = architectures.contains { Self.architecture(architecture, matches: $0) }
            if listed == negatedArchitectures { return false }
        }
        return profiles.isEmpty || profiles.contains { group in group.allSatisfy { $0.negated } }
    }

    /// `amd64` matches `amd64`, `any`, `linux-any` and `any-amd64` (every builder here runs Linux).
    static func architecture(_ architecture: String, matches pattern: String) -> Bool {
        pattern == architecture || pattern == "any" || pattern == "linux-any" || pattern == "any-\(architecture)"
            || pattern == "linux-\(architecture)"
    }
}

/// A relation field: clauses, all of which must hold, each of alternatives, one of which must.
public struct DebianDependency: Equatable, Sendable, CustomStringConvertible {
    public let clauses: [[DebianRelation]]

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    public init(clauses: [[DebianRelation]]) { self.clauses = clauses }

    public var description: String {
        clauses.map { $0.map(\.description).joined(separator: " | ") }.joined(separator: ", ")
    }

    /// Parses a relation field (empty clauses, as a trailing comma leaves, are skipped).
    public static func parse(_ text: String) throws -> DebianDependency {
        var clauses: [[DebianRelation]] = []
        for clause in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = clause.trimmingSpaces
            if trimmed.isEmpty { continue }
            clauses.append(try trimmed.split(separator: "|", omittingEmptySubsequences: false).map { try relation(Substring($0)) })
        }
        return DebianDependency(clauses: clauses)
    }

    static func relation(_ text: Substring) throws -> DebianRelation {
        var rest = text.trimmingSpaces
        let nameEnd = rest.firstIndex { $0 == " " || $0 == "(" || $0 == "[" || $0 == "<" || $0 == "\t" } ?? rest.endIndex
        let full = rest[..<nameEnd]
        rest = rest[nameEnd...].trimmingSpaces
        let parts = full.split(separator: ":", maxSplits: 1)
        guard let name = parts.first, isPackageName(name) else { throw ParseError(description: "not a package name: '\(full)'") }
        var relation = DebianRelation(package: String(name), qualifier: parts.count > 1 ? String(parts[1]) : nil)
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { throw ParseError(description: "unclosed '(' in '\(text)'") }
            var inside = rest[rest.index(after: rest.startIndex)..<close].trimmingSpaces
            let opEnd = inside.firstIndex { !"<>=".contains($0) } ?? inside.endIndex
            let opText = String(inside[..<opEnd])
            inside = inside[opEnd...].trimmingSpaces
            // `<` and `>` are dpkg's old spellings of `<=` and `>=`.
            let op = DebianRelation.Operator(rawValue: opText == "<" ? "<=" : opText == ">" ? ">=" : opText)
            guard let op, let version = DebianVersion(String(inside)) else {
                throw ParseError(description: "not a version constraint: '\(rest[...close])'")
            }
            relation.constraint = (op, version)
            rest = rest[rest.index(after: close)...].trimmingSpaces
        }
        if rest.first == "[" {
            guard let close = rest.firstIndex(of: "]") else { throw ParseError(description: "unclosed '[' in '\(text)'") }
            let names = rest[rest.index(after: rest.startIndex)..<close].split(whereSeparator: { $0 == " " || $0 == "\t" })
            let negated = names.filter { $0.hasPrefix("!") }
            guard !names.isEmpty, negated.isEmpty || negated.count == names.count else {
                throw ParseError(description: "architectures must be all negated or none: '\(rest[...close])'")
            }
            relation.negatedArchitectures = !negated.isEmpty
            relation.architectures = names.map { String($0.drop { $0 == "!" }) }
            rest = rest[rest.index(after: close)...].trimmingSpaces
        }
        while rest.first == "<" {
            guard let close = rest.firstIndex(of: ">") else { throw ParseError(description: "unclosed '<' in '\(text)'") }
            let terms = rest[rest.index(after: rest.startIndex)..<close].split(whereSeparator: { $0 == " " || $0 == "\t" })
            relation.profiles.append(terms.map { ($0.hasPrefix("!"), String($0.drop { $0 == "!" })) })
            rest = rest[rest.index(after: close)...].trimmingSpaces
        }
        guard rest.isEmpty else { throw ParseError(description: "unexpected '\(rest)' in '\(text)'") }
        return relation
    }

    static func isPackageName(_ name: Substring) -> Bool {
        // deb-control(5): at least two characters, lower case letters, digits, `+`, `-` and `.`, first alphanumeric.
        guard let first = name.utf8.first, name.utf8.count >= 2 else { return false }
        let lowerOrDigit: (UInt8) -> Bool = { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) }
        return lowerOrDigit(first) && name.utf8.allSatisfy { lowerOrDigit($0) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E }
    }

    /// The clauses that apply when building on `architecture` (alternatives that do not apply dropped; a
    /// clause with none left dropped), none of whose alternatives `index` satisfies: what is still missing.
    public func unsatisfied(on architecture: String, by index: PackageIndex) -> [[DebianRelation]] {
        clauses.compactMap { clause in
            let applying = clause.filter { $0.applies(on: architecture) }
            guard !applying.isEmpty else { return nil }
            return applying.contains { index.satisfies($0, on: architecture) } ? nil : applying
        }
    }
}

/// What an archive offers: its `Packages` entries, by name and by what they provide.
public struct PackageIndex: Sendable {
    public struct Entry: Equatable, Sendable {
        public var name: String
        public var version: DebianVersion
        public var architecture: String
        /// `same`, `foreign`, `allowed` or nil.
        public var multiArch: String?
        /// Virtual packages it provides, each with a version when it says `(= V)`.
        public var provides: [(name: String, version: DebianVersion?)]

        public init(name: String, version: DebianVersion, architecture: String, multiArch: String? = nil,
                    provides: [(name: String, version: DebianVersion?)] = []) {
            self.name = name
            self.version = version
            self.architecture = architecture
            self.multiArch = multiArch
            self.provides = provides
        }

        public static func == (lhs: Entry, rhs: Entry) -> Bool {
            lhs.name == rhs.name && lhs.version == rhs.version && lhs.architecture == rhs.architecture
                && lhs.multiArch == rhs.multiArch && lhs.provides.map(\.name) == rhs.provides.map(\.name)
                && lhs.provides.map(\.version) == rhs.provides.map(\.version)
        }
    }

    private var byName: [String: [Entry]] = [:]
    private var byProvided: [String: [(entry: Entry, version: DebianVersion?)]] = [:]

    public init(_ entries: [Entry] = []) {
        for entry in entries { add(entry) }
    }

    public mutating func add(_ entry: Entry) {
        byName[entry.name, default: []].append(entry)
        for provided in entry.provides { byProvided[provided.name, default: []].append((entry, provided.version)) }
    }

    public var count: Int { byName.values.reduce(0) { $0 + $1.count } }

    /// Whether some package (or a package providing it) satisfies `relation` for a build on `architecture`:
    /// its architecture fits (the build's or `all`; any with `:any` on a `Multi-Arch: allowed` package, or
    /// the one named), and its version (a provided one's own) meets the constraint.
    public func satisfies(_ relation: DebianRelation, on architecture: String) -> Bool {
        func fits(_ entry: Entry) -> Bool {
            switch relation.qualifier {
            case nil, "native": entry.architecture == architecture || entry.architecture == "all" || entry.multiArch == "foreign"
            case "any": entry.multiArch == "allowed" || entry.multiArch == "foreign"
            case let named?: entry.architecture == named || entry.architecture == "all"
            }
        }
        func meets(_ version: DebianVersion?) -> Bool {
            guard let constraint = relation.constraint else { return true }
            guard let version else { return false }
            return constraint.op.holds(DebianVersion.compare(version, constraint.version))
        }
        if byName[relation.package, default: []].contains(where: { fits($0) && meets($0.version) }) { return true }
        return byProvided[relation.package, default: []].contains { fits($0.entry) && meets($0.version) }
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}
