import BuilddShared

#if canImport(Glibc)
import Glibc
#endif

/// A running build's log as its agent appends it: `<root>/live/BUILD-ATTEMPT.log`, on the store every master
/// shares, so that an agent that moves to another master goes on where the last one left off. At the end the
/// file is checked against the digest the agent declares and moved into the content-addressed store: the log is
/// stored whole without being sent twice.
extension ArtifactStore {
    /// An append at another offset than the end of what the store holds (a chunk sent twice, or one lost):
    /// the agent resends from `held`.
    public struct LiveOffsetMismatch: Error, CustomStringConvertible {
        public let held: Int64
        public var description: String { "the live log holds \(held) bytes" }
    }

    public func livePath(buildID: Int64, attempt: Int32) -> String {
        "\(root)/live/\(buildID)-\(attempt).log"
    }

    /// The bytes held of an attempt's live log (nil when none was sent).
    public func liveSize(buildID: Int64, attempt: Int32) -> Int64? {
        var info = stat()
        guard stat(livePath(buildID: buildID, attempt: attempt), &info) == 0 else { return nil }
        return Int64(info.st_size)
    }

    /// Appends `bytes` at `offset` of an attempt's live log, which must be its end; returns the size held
    /// after. The file is locked while it is checked and written, so two masters taking appends for one
    /// attempt (an agent that moved on while its last request was still in flight) cannot interleave.
    public func appendLive(buildID: Int64, attempt: Int32, offset: Int64, bytes: [UInt8], maxBytes: Int64) throws -> Int64 {
        try BuilddShared.makeDirectories(root + "/live")
        let path = livePath(buildID: buildID, attempt: attempt)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw noted(Failure.system("cannot open the live log", errno: errno)) }
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX) == 0 else { throw Failure.system("cannot lock the live log", errno: errno) }
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw Failure.system("cannot read the live log", errno: errno) }
        let held = Int64(info.st_size)
        guard offset == held else { throw LiveOffsetMismatch(held: held) }
        guard held + Int64(bytes.count) <= maxBytes else {
            throw Failure(description: "the log would exceed \(maxBytes) bytes")
        }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(held) + off_t(written)) }
            if count < 0 {
                if errno == EINTR { continue }
                let failure = noted(Failure.system("cannot append to the live log", errno: errno))
                // Nothing half-written stays: the agent resends from the size held before.
                _ = ftruncate(descriptor, off_t(held))
                throw failure
            }
            written += count
        }
        return held + Int64(bytes.count)
    }

    /// Moves an attempt's live log into the content-addressed store once it hashes to `expectedSHA256`;
    /// returns its digest and size. A log that does not match stays where it is (the agent then sends it whole).
    public func commitLive(buildID: Int64, attempt: Int32, expectedSHA256: String) throws -> (sha256: String, size: Int64) {
        let path = livePath(buildID: buildID, attempt: attempt)
        let descriptor = open(path, O_RDWR | O_CLOEXEC)
        guard descriptor >= 0 else { throw Failure.system("no live log", errno: errno) }
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX) == 0 else { throw Failure.system("cannot lock the live log", errno: errno) }
        var hasher = SHA256()
        var size: Int64 = 0
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = pread(descriptor, &chunk, chunk.count, off_t(size))
            if count < 0 {
                if errno == EINTR { continue }
                throw Failure.system("cannot read the live log", errno: errno)
            }
            if count == 0 { break }
            chunk[0..<count].withUnsafeBytes { hasher.update($0) }
            size += Int64(count)
        }
        let digest = hasher.finalizeHex()
        guard digest == expectedSHA256 else {
            throw Failure(description: "sha256 mismatch: the live log's \(size) bytes hash to \(digest), expected \(expectedSHA256)",
                          isChecksumMismatch: true)
        }
        guard fsync(descriptor) == 0 else { throw noted(Failure.system("fsync failed", errno: errno)) }
        let final = self.path(sha256: digest)
        do {
            try BuilddShared.makeDirectories(String(final.dropLast(digest.count + 1)))
        } catch {
            throw noted(Failure(description: "cannot store the log: \(error)", isFull: (error as? FileSystemError)?.isFull ?? false))
        }
        guard rename(path, final) == 0 else { throw noted(Failure.system("cannot store the log", errno: errno)) }
        return (digest, size)
    }

    /// Up to `limit` bytes of a file from `offset` (empty at or past its end, nil when it cannot be read).
    public static func readBytes(_ path: String, from offset: Int64, limit: Int) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: limit)
        var filled = 0
        while filled < limit {
            let count = bytes[filled...].withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(offset) + off_t(filled)) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { break }
            filled += count
        }
        return Array(bytes[0..<filled])
    }
}
