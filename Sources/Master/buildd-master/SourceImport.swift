import ArgumentParser
import BuilddMasterKit
import BuilddShared
import Foundation

/// Source packages for `build submit`: a `.dsc` on disk, or one fetched from a Debian archive with apt.
/// Either way every file the `.dsc` lists is checked against its `Checksums-Sha256` (and the `.dsc`'s
/// signature with `gpgv`, when a keyring is given) before anything goes into the artifact store.
enum SourceImport {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Checks a `.dsc` and the files beside it, then copies them into the store: the `.dsc` first.
    static func importDsc(at dscPath: String, keyring: String?, into store: ArtifactStore,
                          expecting expected: (name: String, version: String)? = nil) throws -> [FileDigest] {
        // (A file that does not match stays in the store unreferenced.)
        try checkedDsc(at: dscPath, keyring: keyring, expecting: expected) { try store.importFile(at: $0, name: $1) }.map(\.digest)
    }

    /// Checks a `.dsc` and the files beside it without storing anything (for a submit over the API, which
    /// uploads them). Returns each file's path and digest, the `.dsc` first.
    static func checkDsc(at dscPath: String, keyring: String?, expecting expected: (name: String, version: String))
        throws -> [(path: String, digest: FileDigest)] {
        try checkedDsc(at: dscPath, keyring: keyring, expecting: expected, digest: fileDigest)
    }

    /// The `.dsc`'s signature when a keyring is given, then every file it lists (beside it) against its
    /// SHA-256 and size, as `digest` reads each (storing it, or only hashing it): the check a submit over the
    /// API gets too (``DebianControl/mismatch(of:source:version:files:)``).
    private static func checkedDsc(at dscPath: String, keyring: String?, expecting expected: (name: String, version: String)?,
                                   digest: (_ path: String, _ name: String) throws -> FileDigest)
        throws -> [(path: String, digest: FileDigest)] {
        guard let text = try? String(contentsOfFile: dscPath, encoding: .utf8) else {
            throw Failure(description: "cannot read \(dscPath)")
        }
        let package = try DebianControl.sourcePackage(dsc: text)
        if var keyring {
            // gpgv reads a keyring named without a slash from its home folder: name the file given.
            if !keyring.contains("/") { keyring = FileManager.default.currentDirectoryPath + "/" + keyring }
            progress("checking the signature of \(dscPath) against \(keyring)")
            let (status, output) = try run(["/usr/bin/gpgv", "--keyring", keyring, dscPath])
            guard status == 0 else { throw Failure(description: "\(dscPath): signature not valid for \(keyring):\n\(output)") }
        }
        let folder = (dscPath as NSString).deletingLastPathComponent
        let dscName = (dscPath as NSString).lastPathComponent
        guard Naming.isValidFileName(dscName) else { throw Failure(description: "unusable file name \(dscName)") }
        var files = [(path: dscPath, digest: try digest(dscPath, dscName))]
        for file in package.files {
            let path = (folder.isEmpty ? "." : folder) + "/" + file.name
            files.append((path, try digest(path, file.name)))
        }
        if let problem = DebianControl.mismatch(of: package, source: expected?.name ?? package.name,
                                                version: expected?.version ?? package.version,
                                                files: files.dropFirst().map(\.digest)) {
            throw Failure(description: "\(dscPath): \(problem)")
        }
        progress("\(package.name) \(package.version): \(dscName) and \(package.files.count) file(s) checked against the .dsc's SHA-256")
        return files
    }

    /// A local file's SHA-256 and size, read in chunks.
    static func fileDigest(at path: String, name: String) throws -> FileDigest {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure(description: "cannot read \(path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: Int64 = 0
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(chunk)
            size += Int64(chunk.count)
        }
        return FileDigest(name: name, sha256: hasher.finalizeHex(), size: size)
    }

    /// Fetches NAME VERSION's source package from the archive a sources file names (its `deb` entries read
    /// as `deb-src`), with apt and a private package list, into `folder`; returns the `.dsc`'s path.
    static func fetchFromArchive(name: String, version: String, sources: String, into folder: String) throws -> String {
        guard let text = try? String(contentsOfFile: sources, encoding: .utf8) else {
            throw Failure(description: "cannot read the archive sources file \(sources)")
        }
        let deb822 = sources.hasSuffix(".sources")
        let sourceText = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            if deb822, line.hasPrefix("Types:") { return "Types: deb-src" }
            if !deb822, line.hasPrefix("deb ") { return "deb-src " + line.dropFirst(4) }
            return String(line)
        }.joined(separator: "\n")
        let list = folder + "/apt/sources" + (deb822 ? ".sources" : ".list")
        try FileManager.default.createDirectory(atPath: folder + "/apt/lists/partial", withIntermediateDirectories: true)
        try sourceText.write(toFile: list, atomically: true, encoding: .utf8)
        let options = ["-q", "-o", "Dir::Etc::sourcelist=\(list)", "-o", "Dir::Etc::sourceparts=/dev/null",
                       "-o", "Dir::State::Lists=\(folder)/apt/lists", "-o", "APT::Sandbox::User=root"]
        progress("reading the source index of the archive in \(sources)")
        let (updated, updateOutput) = try run(["/usr/bin/apt-get"] + options + ["update"])
        guard updated == 0 else { throw Failure(description: "apt-get update failed:\n\(updateOutput)") }
        progress("fetching \(name) \(version)")
        let (fetched, output) = try run(["/usr/bin/apt-get"] + options + ["source", "--download-only", "\(name)=\(version)"],
                                        directory: folder)
        guard fetched == 0 else { throw Failure(description: "apt-get source \(name)=\(version) failed:\n\(output)") }
        let upstream = version.split(separator: ":", maxSplits: 1).last.map(String.init) ?? version
        let dsc = "\(folder)/\(name)_\(upstream).dsc"
        guard FileManager.default.fileExists(atPath: dsc) else { throw Failure(description: "apt fetched no \(dsc)") }
        return dsc
    }

    /// Runs a program to its end; its status and its output (standard output and error together).
    static func run(_ arguments: [String], directory: String? = nil) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw Failure(description: "cannot run \(arguments[0]): \(error)") }
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("buildd-master: \(line)\n".utf8))
    }
}
