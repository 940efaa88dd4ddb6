import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

/// `buildd-master archive add|list`: the archives builds are for and draw their build dependencies from.
struct ArchiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive", abstract: "Manage archives (the apt sources builds draw from).",
        subcommands: [Add.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add an archive: a distribution's primary archive, or a PPA that builds may be submitted for.",
            discussion: """
                A build's job carries apt sources by Launchpad's archive dependencies: its archive in its pocket's \\
                dependencies (security adds release; updates adds security and release; proposed and backports add \\
                updates, security and release) and its component's (restricted adds main; universe adds restricted \\
                and main; multiverse adds all), then each archive it --depends-on, then the primary archive (for a \\
                PPA in updates and every component). A farm with no archives gives jobs no sources: builds use their \\
                chroot's own. Submit a build for an archive with `build submit ... --in-archive NAME`.
                """)
        @Argument(help: "Archive name.") var name: String
        @Option(help: "Its root URL (dists/ and pool/ below it), http:// or https://; a private one's may carry user:password.")
        var url: String
        @Option(help: "Make it the primary archive of this distribution.") var primary: String?
        @Flag(name: .customLong("private"), help: "A private archive: its builds are private (and virtualized).")
        var isPrivate = false
        @Option(help: "Its signing key, an ASCII-armoured OpenPGP public key file (gpg --armor --export).") var key: String?
        @Option(name: .customLong("depends-on"),
                help: "ARCHIVE[:POCKET[:COMPONENT]] its builds also draw from, in order (repeatable; default pocket release, component the build's).")
        var dependencies: [String] = []
        @Flag(help: "Its builds keep debug symbols (Launchpad's build_debug_symbols).") var buildDebugSymbols = false
        @OptionGroup var connection: ConnectionOptions

        func parsedDependencies() throws -> [ArchiveDependency] {
            try dependencies.map { text in
                let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
                guard (1...3).contains(parts.count), !parts[0].isEmpty else {
                    throw ValidationError("--depends-on is ARCHIVE[:POCKET[:COMPONENT]], not '\(text)'")
                }
                guard let pocket = parts.count > 1 ? Pocket(rawValue: parts[1]) : .release else {
                    throw ValidationError("--depends-on \(text): the pocket is one of \(Pocket.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                var component: Component?
                if parts.count > 2 {
                    guard let known = Component(rawValue: parts[2]) else {
                        throw ValidationError("--depends-on \(text): the component is one of \(Component.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    component = known
                }
                return ArchiveDependency(archive: parts[0], pocket: pocket, component: component)
            }
        }

        func archive() throws -> ArchiveSource {
            var signingKey: String?
            if let key {
                guard let text = try? String(contentsOfFile: key, encoding: .utf8) else {
                    throw ValidationError("cannot read the key file \(key)")
                }
                signingKey = text
            }
            let archive = ArchiveSource(name: name, kind: primary == nil ? .ppa : .primary, url: url, isPrivate: isPrivate,
                                        signingKey: signingKey, dependencies: try parsedDependencies())
            if let problem = ArchiveDependencies.problem(archive) { throw ValidationError(problem) }
            return archive
        }

        func validate() throws {
            if primary != nil && isPrivate { throw ValidationError("a primary archive is not private") }
            _ = try archive()
        }

        func run() async throws {
            let archive = try archive()
            try await withStore(connection) {
                try await $0.addArchive(archive, distribution: primary, buildDebugSymbols: buildDebugSymbols)
            }
            print("archive \(name) added\(primary.map { " as the primary archive of \($0)" } ?? "")")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List archives with their dependencies.")
        @OptionGroup var connection: ConnectionOptions
        @OptionGroup var output: OutputOptions

        struct Row: Encodable {
            let name, kind, url: String
            let isPrivate, signed: Bool
            let dependencies: [ArchiveDependency]
            enum CodingKeys: String, CodingKey {
                case name, kind, url, signed, dependencies
                case isPrivate = "private"
            }
        }

        func run() async throws {
            let snapshot = try await withStore(connection) { try await $0.archiveSnapshot(fresh: true) }
            // A private archive's URL may carry its credentials: listed without them.
            let rows = snapshot.archives.values.sorted { $0.name < $1.name }.map {
                Row(name: $0.name, kind: $0.kind.rawValue, url: ServiceURL.withoutCredentials($0.url), isPrivate: $0.isPrivate,
                    signed: $0.signingKey != nil, dependencies: $0.dependencies)
            }
            if output.json { return printJSON(rows) }
            for row in rows {
                let primaryOf = snapshot.primaries.first { $0.value == row.name }?.key
                print("\(row.name)  \(primaryOf.map { "primary of \($0)" } ?? (row.isPrivate ? "private PPA" : "PPA"))  \(row.url)"
                      + (row.signed ? "  signed" : "  (no key)"))
                for dependency in row.dependencies {
                    print("    depends on \(dependency.archive) \(dependency.pocket.rawValue) \(dependency.component?.rawValue ?? "(the build's component)")")
                }
            }
        }
    }
}
