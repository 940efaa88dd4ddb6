import BuilddShared
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#endif

/// A result ready to report.
struct PendingFinished: Codable, Sendable {
    var result: BuilderResult
    var files: [FileDigest]
    var log: FileDigest?
    var message: String?
}

/// The build an agent holds, kept on disk so a restart cannot lose it.
struct PersistedBuild: Codable, Sendable {
    var job: JobMessage
    /// Set once the build ended and its files were uploaded; delivered again after a restart.
    var finished: PendingFinished?
    /// The build command's process (group) while it runs, so a restarted agent can stop an orphan.
    var pid: Int32?
}

/// `agent-state.json` in the work directory, written atomically (temporary file, fsync, rename).
struct AgentStateFile: Sendable {
    let path: String

    func load() -> PersistedBuild? {
        guard let text = AgentConfiguration.readFile(path) else { return nil }
        return try? JSONDecoder().decode(PersistedBuild.self, from: Data(text.utf8))
    }

    func save(_ build: PersistedBuild) {
        let bytes = (try? JSONEncoder().encode(build)).map { Array($0) } ?? []
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        fsync(descriptor)
        close(descriptor)
        rename(temporary, path)
    }

    func remove() {
        unlink(path)
    }
}
