/// Dependency waits that end by themselves (Launchpad's dep-wait retry job): a MANUALDEPWAIT build keeps the
/// relation its builder said is missing (`dependencies`), and a periodic pass retries it once the `Packages`
/// indexes of its archives satisfy that relation. The rules are here; the master's ``DepWaitRetrier`` only
/// fetches the indexes and retries what this decides.
public enum DepWait {
    /// How builders name what a dependency wait misses (the agent from apt's account in the log, the
    /// legacy adapter from launchpad-buildd's `dependencies`).
    public static let messagePrefix = "missing dependencies: "

    /// The missing relation a builder's message names, when it is a relation field dpkg could read; nil
    /// otherwise (the build then waits for an operator's `build retry`, as before).
    public static func relation(inMessage message: String?) -> String? {
        guard let message, let start = message.firstRange(of: messagePrefix) else { return nil }
        let text = String(message[start.upperBound...].trimmingSpaces)
        guard !text.isEmpty, text.utf8.count <= 4096, (try? DebianDependency.parse(text)) != nil else { return nil }
        return text
    }

    /// What the pass decides for one waiting build.
    public enum Decision: Equatable, Sendable {
        /// Every clause is satisfied now: retry it.
        case retry
        /// Still missing (the clauses, as a relation field).
        case wait(missing: String)
        /// The relation cannot be read: it waits for an operator.
        case unreadable(String)
    }

    /// Whether `dependencies` is satisfiable, building on `architecture`, from `index` (every archive of the
    /// build's sources together).
    public static func decide(dependencies: String, architecture: String, index: PackageIndex) -> Decision {
        let parsed: DebianDependency
        do { parsed = try DebianDependency.parse(dependencies) } catch { return .unreadable("\(error)") }
        let missing = parsed.unsatisfied(on: architecture, by: index)
        return missing.isEmpty ? .retry : .wait(missing: DebianDependency(clauses: missing).description)
    }

    /// The `Packages` index of each component of an apt source for `architecture`
    /// (`URL/dists/SUITE/COMPONENT/binary-ARCH/Packages`; the architecture-independent packages are in it too).
    public static func indexURLs(of source: AptSource, architecture: String) -> [String] {
        let root = source.url.hasSuffix("/") ? String(source.url.dropLast()) : source.url
        return source.components.map { "\(root)/dists/\(source.suite)/\($0)/binary-\(architecture)/Packages" }
    }
}

extension PackageIndex {

    /// Adds the stanzas of a `Packages` file (``entries(inPackagesFile:)``). Returns how many it added.
    @discardableResult
    public mutating func add(packagesFile text: String) -> Int {
        let entries = Self.entries(inPackagesFile: text)
        for entry in entries { add(entry) }
        return entries.count
    }

    /// The stanzas of a `Packages` file (`Package`, `Version`, `Architecture`, `Multi-Arch`, `Provides`); a
    /// stanza without a readable name, version and architecture is skipped.
    public static func entries(inPackagesFile text: String) -> [Entry] {
        var entries: [Entry] = []
        var fields: [String: String] = [:]
        var last: String?
        func flush() {
            defer { fields = [:]; last = nil }
            guard let name = fields["package"], let versionText = fields["version"],
                  let version = DebianVersion(versionText), let architecture = fields["architecture"] else { return }
            var provides: [(name: String, version: DebianVersion?)] = []
            for item in (fields["provides"] ?? "").split(separator: ",") {
                let parts = item.trimmingSpaces.split(separator: "(", maxSplits: 1)
                guard let first = parts.first else { continue }
                let provided = String(first.trimmingSpaces)
                guard !provided.isEmpty else { continue }
                var providedVersion: DebianVersion?
                if parts.count == 2 {
                    let inside = parts[1].split(separator: ")").first.map { Substring($0).trimmingSpaces } ?? ""
                    if inside.hasPrefix("=") { providedVersion = DebianVersion(String(inside.dropFirst().trimmingSpaces)) }
                }
                provides.append((provided, providedVersion))
            }
            entries.append(Entry(name: name, version: version, architecture: architecture, multiArch: fields["multi-arch"],
                                 provides: provides))
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingSpaces.isEmpty {
                flush()
            } else if line.first == " " || line.first == "\t" {
                if let last { fields[last, default: ""] += " " + String(line.trimmingSpaces) }
            } else if let colon = line.firstIndex(of: ":") {
                let key = line[..<colon].lowercased()
                fields[key] = String(line[line.index(after: colon)...].trimmingSpaces)
                last = key
            }
        }
        flush()
        return entries
    }
}
