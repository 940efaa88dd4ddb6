/// The apt sources a build installs its build dependencies from, by Launchpad's archive dependencies
/// (`lib/lp/soyuz/adapters/archivedependencies.py`): pocket dependencies, component dependencies, an
/// archive's own dependencies on other archives, and the primary archive every other archive builds on.
/// Pure rules: the store keeps the archives, a job carries what ``ArchiveDependencies/sources(for:archives:)``
/// returns, and the agent and the legacy adapter only write it out.

/// An archive builds are for or draw from.
public struct ArchiveSource: Equatable, Sendable, Codable {
    public enum Kind: String, Equatable, Sendable, Codable, CaseIterable {
        /// The distribution's own archive: every other archive's builds draw from it too.
        case primary
        /// A personal or team archive (a PPA), public or private.
        case ppa
    }

    public var name: String
    public var kind: Kind
    /// The archive's root (`dists/` and `pool/` below it), `http://` or `https://`.
    public var url: String
    /// Private: its builds require virtualization and are shown only to those who may see them, and its
    /// URL (with its credentials) reaches only the builder of one of its builds.
    public var isPrivate: Bool
    /// The OpenPGP key its `Release` files are signed with (ASCII-armoured), written beside the sources
    /// for apt's `signed-by`; nil: the chroot's own keyring must trust it.
    public var signingKey: String?
    /// The archives its builds draw from, each in a pocket and component (Launchpad's `ArchiveDependency`).
    public var dependencies: [ArchiveDependency]

    public init(name: String, kind: Kind = .ppa, url: String, isPrivate: Bool = false, signingKey: String? = nil,
                dependencies: [ArchiveDependency] = []) {
        self.name = name
        self.kind = kind
        self.url = url
        self.isPrivate = isPrivate
        self.signingKey = signingKey
        self.dependencies = dependencies
    }
}

/// One archive another draws from: in `pocket` (with that pocket's own dependencies) and in `component`
/// (with its dependencies; nil: the build's own component).
public struct ArchiveDependency: Equatable, Sendable, Codable {
    public var archive: String
    public var pocket: Pocket
    public var component: Component?

    public init(archive: String, pocket: Pocket = .release, component: Component? = nil) {
        self.archive = archive
        self.pocket = pocket
        self.component = component
    }
}

/// One line of a build's apt sources: `deb [signed-by=KEY] URL SUITE COMPONENT...`.
public struct AptSource: Equatable, Sendable, Codable {
    public var archive: String
    public var url: String
    public var suite: String
    public var components: [String]
    /// The archive's signing key (ASCII-armoured), when it has one.
    public var signingKey: String?

    public init(archive: String, url: String, suite: String, components: [String], signingKey: String?) {
        self.archive = archive
        self.url = url
        self.suite = suite
        self.components = components
        self.signingKey = signingKey
    }

    /// The sources.list line, with the signing key at `keyPath` when it has one.
    public func line(keyPath: String?) -> String {
        let options = keyPath.map { "[signed-by=\($0)] " } ?? ""
        return "deb \(options)\(url) \(suite) \(components.joined(separator: " "))"
    }

    /// launchpad-buildd's `archives` argument: the line without options (it adds its own trusted keys).
    public var legacyLine: String { line(keyPath: nil) }
}

/// Why a build's sources cannot be worked out.
public struct ArchiveDependencyError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum ArchiveDependencies {
    /// Launchpad's pocket dependencies: a build in a pocket also sees the pockets it builds on.
    public static func pockets(for pocket: Pocket) -> [Pocket] {
        switch pocket {
        case .release: [.release]
        case .security: [.release, .security]
        case .updates: [.release, .security, .updates]
        case .proposed: [.release, .security, .updates, .proposed]
        case .backports: [.release, .security, .updates, .backports]
        }
    }

    /// Launchpad's component dependencies: a component sees the components below it.
    public static func components(for component: Component) -> [Component] {
        switch component {
        case .main: [.main]
        case .restricted: [.main, .restricted]
        case .universe: [.main, .restricted, .universe]
        case .multiverse: [.main, .restricted, .universe, .multiverse]
        case .partner: [.partner]
        }
    }

    /// The suite of a series in a pocket: `noble`, `noble-security`, ...
    public static func suite(series: String, pocket: Pocket) -> String {
        pocket == .release ? series : "\(series)-\(pocket.rawValue)"
    }

    /// What a build is for: its archive, series, pocket and component.
    public struct Context: Equatable, Sendable {
        public var archive: String
        public var series: String
        public var pocket: Pocket
        public var component: Component

        public init(archive: String, series: String, pocket: Pocket, component: Component) {
            self.archive = archive
            self.series = series
            self.pocket = pocket
            self.component = component
        }
    }

    /// The apt sources of a build, in Launchpad's order (`expand_dependencies`):
    /// 1. an archive other than the primary one: itself, in the build's pocket and component dependencies;
    /// 2. each archive it depends on, in that dependency's pocket and component dependencies (the build's
    ///    component where the dependency names none);
    /// 3. the primary archive (`primary`), unless the archive depends on it explicitly: for a primary
    ///    build in the build's pocket and component dependencies, for any other in `updates` and every
    ///    component (Launchpad's default primary dependency of a PPA).
    /// A line already given is not repeated. Throws for an archive it does not know.
    public static func sources(for build: Context, primary: String, archives: [String: ArchiveSource]) throws -> [AptSource] {
        guard let own = archives[build.archive] else { throw ArchiveDependencyError("unknown archive '\(build.archive)'") }
        guard let main = archives[primary], main.kind == .primary else {
            throw ArchiveDependencyError("no primary archive '\(primary)'")
        }
        var lines: [AptSource] = []
        func add(_ archive: ArchiveSource, pocket: Pocket, components: [Component]) {
            for expanded in pockets(for: pocket) {
                let line = AptSource(archive: archive.name, url: archive.url, suite: suite(series: build.series, pocket: expanded),
                                     components: components.map(\.rawValue), signingKey: archive.signingKey)
                if !lines.contains(line) { lines.append(line) }
            }
        }
        if own.kind != .primary {
            add(own, pocket: build.pocket, components: components(for: build.component))
        }
        for dependency in own.dependencies where dependency.archive != own.name {
            guard let archive = archives[dependency.archive] else {
                throw ArchiveDependencyError("archive '\(own.name)' depends on unknown archive '\(dependency.archive)'")
            }
            add(archive, pocket: dependency.pocket, components: components(for: dependency.component ?? build.component))
        }
        if !own.dependencies.contains(where: { $0.archive == main.name }) {
            if own.kind == .primary {
                add(main, pocket: build.pocket, components: components(for: build.component))
            } else {
                add(main, pocket: .updates, components: components(for: .multiverse))
            }
        }
        return lines
    }

    /// What makes an archive one an operator may not add, or nil: its name, its URL, a dependency on
    /// itself or named twice.
    public static func problem(_ archive: ArchiveSource) -> String? {
        if !Names.isValid(archive.name) { return "invalid archive name '\(archive.name)': a name is [a-z0-9][a-z0-9.+_-]{0,63}" }
        guard archive.url.hasPrefix("http://") || archive.url.hasPrefix("https://"),
              !archive.url.contains(where: { $0 == " " || $0 == "\n" || $0 == "]" || $0 == "[" }) else {
            return "an archive URL is http:// or https://, with no spaces or brackets"
        }
        if archive.dependencies.contains(where: { $0.archive == archive.name }) { return "an archive cannot depend on itself" }
        let named = archive.dependencies.map(\.archive)
        if Set(named).count != named.count { return "an archive is named twice among the dependencies" }
        if let key = archive.signingKey, !key.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
            return "the signing key must be an ASCII-armoured OpenPGP public key (gpg --armor --export)"
        }
        return nil
    }
}
