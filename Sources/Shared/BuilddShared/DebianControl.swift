/// Debian's control-file formats, as far as the farm reads them: a source package's `.dsc` (which files
/// make the package, with their SHA-256) and apt's account of build dependencies it cannot satisfy.
public enum DebianControl {
    /// One paragraph of `Field: value` lines; continuation lines (starting with a space or tab) are
    /// kept, one per line, without their first blank. An OpenPGP clear-signed `.dsc` is read inside
    /// its signature (the armour lines are skipped; checking the signature is `gpgv`'s job).
    public static func fields(_ text: String) -> [String: String] {
        var fields: [String: String] = [:]
        var current: String?
        var inSignature = false
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.hasSuffix("\r") ? String(rawLine.dropLast()) : String(rawLine)
            if line.hasPrefix("-----BEGIN PGP SIGNED MESSAGE") { continue }
            if line.hasPrefix("-----BEGIN PGP SIGNATURE") { inSignature = true; continue }
            if line.hasPrefix("-----END PGP SIGNATURE") { inSignature = false; continue }
            if inSignature { continue }
            if line.hasPrefix("Hash:") && fields.isEmpty && current == nil { continue }
            if line.isEmpty { if !fields.isEmpty { current = nil }; continue }
            if line.first == " " || line.first == "\t" {
                if let current { fields[current, default: ""] += "\n" + line.dropFirst() }
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon]).lowercased()
            fields[name] = line[line.index(after: colon)...].trimmed(" \t\r")
            current = name
        }
        return fields
    }

    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// The source package a `.dsc` describes: its name, version and files with their SHA-256 and size
    /// (the `Checksums-Sha256` field; a `.dsc` without one is refused: MD5 alone proves nothing).
    public struct SourcePackage: Equatable, Sendable {
        public let name: String
        public let version: String
        public let files: [FileDigest]

        public init(name: String, version: String, files: [FileDigest]) {
            self.name = name
            self.version = version
            self.files = files
        }
    }

    public static func sourcePackage(dsc text: String) throws -> SourcePackage {
        let fields = fields(text)
        guard let name = fields["source"], !name.isEmpty else { throw Invalid(description: ".dsc has no Source field") }
        guard let version = fields["version"], !version.isEmpty else { throw Invalid(description: ".dsc has no Version field") }
        guard let checksums = fields["checksums-sha256"] else {
            throw Invalid(description: ".dsc of \(name) \(version) has no Checksums-Sha256 field")
        }
        var files: [FileDigest] = []
        for line in checksums.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.isEmpty { continue }
            guard parts.count == 3, Naming.isValidSHA256(String(parts[0])), let size = Int64(parts[1]), size >= 0 else {
                throw Invalid(description: ".dsc of \(name) \(version): unreadable Checksums-Sha256 line '\(line)'")
            }
            let file = String(parts[2])
            guard Naming.isValidFileName(file) else {
                throw Invalid(description: ".dsc of \(name) \(version) names a file that is not a plain name: \(file)")
            }
            files.append(FileDigest(name: file, sha256: String(parts[0]), size: size))
        }
        guard !files.isEmpty else { throw Invalid(description: ".dsc of \(name) \(version) lists no files") }
        return SourcePackage(name: name, version: version, files: files)
    }

    /// Why files given with a `.dsc` are not the source package it describes (nil: they are): a source or
    /// version other than the `.dsc`'s, a file it lists that is missing or differs (SHA-256 or size), or a
    /// file it does not list.
    public static func mismatch(of package: SourcePackage, source: String, version: String, files: [FileDigest]) -> String? {
        if package.name != source || package.version != version {
            return "it is \(package.name) \(package.version), not \(source) \(version)"
        }
        let given = Dictionary(files.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        for listed in package.files {
            guard let file = given[listed.name] else { return "\(listed.name) is listed but not given" }
            guard file.sha256 == listed.sha256, file.size == listed.size else {
                return "\(listed.name) does not match the .dsc: sha256 \(file.sha256), \(file.size) bytes; "
                    + "the .dsc says \(listed.sha256), \(listed.size) bytes"
            }
        }
        let listed = Set(package.files.map(\.name))
        if let extra = files.first(where: { !listed.contains($0.name) }) { return "\(extra.name) is given but not listed" }
        return nil
    }

    /// The build dependencies apt could not satisfy, from a build log: the relations of apt's
    /// "The following packages have unmet dependencies:" account (`Depends: libfoo-dev (>= 2.0) but it is
    /// not installable`), joined as a Debian relation list (`libfoo-dev (>= 2.0), libbar-dev`), the way
    /// Launchpad records a build's missing dependencies. Nil when the log holds no such account (the
    /// build failed for another reason). The last account in the log counts.
    public static func unmetBuildDependencies(inLog log: String) -> String? {
        let lines = log.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.lastIndex(where: { $0.contains("The following packages have unmet dependencies:") })
        else { return nil }
        var relations: [String] = []
        for line in lines[(start + 1)...] {
            guard line.first == " " || line.first == "\t" else { break }
            for kind in ["Depends: ", "PreDepends: ", "Pre-Depends: "] {
                guard let found = line.firstRange(of: kind) else { continue }
                var relation = Substring(line[found.upperBound...])
                for ending in [" but ", " which is a virtual package", " is to be installed"] {
                    if let end = relation.firstRange(of: ending) { relation = relation[..<end.lowerBound] }
                }
                let text = relation.trimmed(" \t\r")
                if !text.isEmpty && !relations.contains(text) { relations.append(text) }
                break
            }
        }
        return relations.isEmpty ? nil : relations.joined(separator: ", ")
    }
}
