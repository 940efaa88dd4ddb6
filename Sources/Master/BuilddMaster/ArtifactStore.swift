import BuilddShared
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Result files and logs on disk, content-addressed: `<root>/sha256/ab/abcdef...`.
///
/// Uploads go to `<root>/tmp/` first and are renamed into place only after their size and digest
/// were checked, so a reader never sees a partial file.
public struct ArtifactStore: Sendable {
    public let root: String

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// The store's filesystem has no room left (ENOSPC, EDQUOT): not the sender's fault, and worth trying
        /// again once space is freed.
        public var isFull = false
        /// The bytes did not hash to the digest the sender declared.
        public var isChecksumMismatch = false

        init(description: String, isFull: Bool = false, isChecksumMismatch: Bool = false) {
            self.description = description
            self.isFull = isFull
            self.isChecksumMismatch = isChecksumMismatch
        }

        /// A failed system call's error, `isFull` for a filesystem with no room left.
        static func system(_ what: String, errno code: Int32) -> Failure {
            Failure(description: "\(what): \(String(cString: strerror(code)))", isFull: code == ENOSPC || code == EDQUOT)
        }
    }

    /// Whether an upload failed for lack of room since one was last stored (what `/healthz` says).
    public let fullness = Fullness()

    /// Whether the store ran out of room: set when a write fails for lack of it, cleared when a file is stored
    /// again (or, by `/healthz`, once ``ArtifactStore/freeBytes()`` shows room for the largest file allowed).
    public final class Fullness: Sendable {
        private let full = Mutex(false)
        public var isFull: Bool { full.withLock { $0 } }
        func noteFull() { full.withLock { $0 = true } }
        public func clear() { full.withLock { $0 = false } }
    }

    /// The bytes an unprivileged writer may still use on the store's filesystem.
    public func freeBytes() -> Int64? {
        var stats = statvfs()
        guard statvfs(root, &stats) == 0 else { return nil }
        return Int64(stats.f_bavail) * Int64(stats.f_frsize)
    }

    public init(root: String) throws {
        self.root = root
        try BuilddShared.makeDirectories(root + "/tmp")
        try BuilddShared.makeDirectories(root + "/sha256")
    }

    /// Where a blob with this digest lives.
    public func path(sha256: String) -> String {
        "\(root)/sha256/\(sha256.prefix(2))/\(sha256)"
    }

    /// The size of the blob with this digest, when the store holds it.
    public func size(sha256: String) -> Int64? {
        var info = stat()
        guard Naming.isValidSHA256(sha256), stat(path(sha256: sha256), &info) == 0 else { return nil }
        return Int64(info.st_size)
    }

    public func exists(sha256: String) -> Bool {
        access(path(sha256: sha256), F_OK) == 0
    }

    /// Copies a local file into the store (an operator adding a source); returns its digest.
    public func importFile(at path: String, name: String) throws -> FileDigest {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
        defer { close(input) }
        let upload = try beginUpload()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = read(input, &chunk, chunk.count)
            if count < 0 { throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            try chunk[0..<count].withUnsafeBytes { try upload.write($0) }
        }
        let size = upload.size
        return FileDigest(name: name, sha256: try upload.commit(expectedSHA256: nil), size: size)
    }

    /// The SHA-1 of a stored blob (launchpad-buildd names files by SHA-1).
    public func sha1(sha256: String) throws -> String {
        try hashFile(path(sha256: sha256))
    }

    /// Stores bytes already in memory (a file fetched from a legacy builder); returns its digest.
    public func importBytes(_ bytes: [UInt8], name: String) throws -> FileDigest {
        let upload = try beginUpload()
        do {
            try bytes.withUnsafeBytes { try upload.write($0) }
            return FileDigest(name: name, sha256: try upload.commit(expectedSHA256: nil), size: Int64(bytes.count))
        } catch {
            upload.discard()
            throw error
        }
    }

    /// A failure of this store, noted in ``fullness`` when it is for lack of room.
    func noted(_ failure: Failure) -> Failure {
        if failure.isFull { fullness.noteFull() }
        return failure
    }

    /// Starts an upload into a temporary file.
    public func beginUpload() throws -> Upload {
        let temporary = "\(root)/tmp/upload-\(randomHexToken(bytes: 12))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw noted(Failure.system("cannot create upload file", errno: errno))
        }
        return Upload(store: self, temporaryPath: temporary, descriptor: descriptor)
    }

    /// One upload in progress. Call ``commit(expectedSHA256:)`` or ``discard()`` exactly once.
    public final class Upload {
        let store: ArtifactStore
        let temporaryPath: String
        private var descriptor: Int32
        private var hasher = SHA256()
        public private(set) var size: Int64 = 0

        init(store: ArtifactStore, temporaryPath: String, descriptor: Int32) {
            self.store = store
            self.temporaryPath = temporaryPath
            self.descriptor = descriptor
        }

        deinit { discard() }

        /// Appends bytes (local disk writes of one chunk; short enough to run inline).
        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            hasher.update(bytes)
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    let failure = store.noted(Failure.system("write failed", errno: errno))
                    // Nothing partial stays behind: the caller may not discard a failed upload.
                    discard()
                    throw failure
                }
                offset += written
            }
            size += Int64(bytes.count)
        }

        /// Checks the digest, makes the file durable and moves it into place. Returns the digest.
        /// - Parameter expectedSHA256: the digest the sender declared; nil takes the bytes as they came.
        public func commit(expectedSHA256: String?) throws -> String {
            let digest = hasher.finalizeHex()
            guard expectedSHA256 == nil || digest == expectedSHA256 else {
                discard()
                throw Failure(description: "sha256 mismatch: got \(digest), expected \(expectedSHA256 ?? "")",
                              isChecksumMismatch: true)
            }
            // (A filesystem that allocates late says it is full here, not at the write.)
            guard fsync(descriptor) == 0 else {
                let failure = store.noted(Failure.system("fsync failed", errno: errno))
                discard()
                throw failure
            }
            close(descriptor)
            descriptor = -1
            let final = store.path(sha256: digest)
            do {
                try BuilddShared.makeDirectories(String(final.dropLast(digest.count + 1)))
            } catch {
                unlink(temporaryPath)
                throw store.noted(Failure(description: "cannot store artifact: \(error)",
                                          isFull: (error as? FileSystemError)?.isFull ?? false))
            }
            if rename(temporaryPath, final) != 0 {
                let failure = store.noted(Failure.system("cannot store artifact", errno: errno))
                unlink(temporaryPath)
                throw failure
            }
            store.fullness.clear()
            return digest
        }

        /// Drops the upload.
        public func discard() {
            if descriptor >= 0 {
                close(descriptor)
                descriptor = -1
                unlink(temporaryPath)
            }
        }
    }
}
