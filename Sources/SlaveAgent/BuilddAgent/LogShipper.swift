import BuilddShared
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Sends a running build's log to the masters as it grows, so that it can be followed live and is stored whole
/// at the end without being sent again (`PATCH /v1/builds/ID/attempts/N/log`, see the master's `HTTPAPI+Log`).
///
/// Each append says where it starts (`X-Log-Offset`); the master answers with what it holds. A chunk the master
/// already has (its answer was lost) or one it lacks (another master took the last) is answered 416 with the
/// offset to go on from. A master that does not answer is left for the next configured one: they share the
/// artifact store, so the next goes on where the last left off. The log cap is the agent's own (`max_log_bytes`
/// stops the build); the master refuses past its largest artifact.
final class LogShipper: Sendable {
    typealias Send = @Sendable (_ method: String, _ url: String, _ headers: [String: String], _ body: [UInt8])
        async throws -> SimpleHTTPClient.Response

    let path: String
    let resource: String
    let masters: [String]
    let key: String
    let send: Send
    let logger: Logger
    /// The offset the masters hold (as far as this agent knows) and the master to send to next.
    private let state = Mutex<(sent: Int64, master: Int, gaveUp: String?)>((0, 0, nil))
    static let chunk = 256 * 1024

    /// - Parameters:
    ///   - masters: the master to send to first (the job's, or the one that took its last file), then the others.
    ///   - resource: the log's path below a master's URL, `/v1/builds/ID/attempts/N/log`.
    init(path: String, resource: String, masters: [String], key: String, logger: Logger, send: @escaping Send) {
        self.path = path
        self.resource = resource
        self.masters = masters
        self.key = key
        self.logger = logger
        self.send = send
    }

    var sent: Int64 { state.withLock { $0.sent } }

    /// Sends what the log grew by, every `interval`, until cancelled.
    func run(every interval: Duration) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { break }
            _ = await shipGrowth()
        }
    }

    /// Sends the log from the offset held up to its current size; false when a master did not take it (tried
    /// again at the next round, from where the masters are).
    func shipGrowth() async -> Bool {
        while true {
            guard state.withLock({ $0.gaveUp == nil }) else { return false }
            let size = Self.size(of: path)
            let offset = sent
            guard size > offset else { return true }
            guard let bytes = Self.read(path, from: offset, limit: Self.chunk) else { return false }
            guard await append(bytes, at: offset, final: nil) != nil else { return false }
        }
    }

    /// Sends the rest of the log with its digest: the master stores it as the attempt's log. The last chunk
    /// goes with the digest, so a short build's whole log is one request. Nil when the masters could not take
    /// it that way (the caller sends the log whole).
    func finish(name: String) async -> FileDigest? {
        guard let (sha256, size) = try? Files.digest(path) else { return nil }
        for _ in 1...3 {
            guard state.withLock({ $0.gaveUp == nil }) else { break }
            // All but the last chunk as usual.
            while size - sent > Int64(Self.chunk), state.withLock({ $0.gaveUp == nil }) {
                guard let bytes = Self.read(path, from: sent, limit: Self.chunk),
                      await append(bytes, at: sent, final: nil) != nil else { break }
            }
            let offset = sent
            guard size - offset <= Int64(Self.chunk), let rest = Self.read(path, from: offset, limit: Int(size - offset)),
                  Int64(rest.count) == size - offset else { continue }
            if let digest = await append(rest, at: offset, final: (name, sha256)), !digest.sha256.isEmpty { return digest }
        }
        let why = state.withLock { $0.gaveUp } ?? "the masters did not take it"
        logger.warning("build log not stored from the live appends: sending it whole", metadata: ["reason": "\(why)"])
        return nil
    }

    /// One append (to the current master, then the others). Returns the stored log for the last append, an
    /// empty digest for any other that a master took, and nil when none did.
    private func append(_ bytes: [UInt8], at offset: Int64, final: (name: String, sha256: String)?) async -> FileDigest? {
        let first = state.withLock { $0.master }
        for step in 0..<masters.count {
            let index = (first + step) % masters.count
            var url = masters[index] + resource
            var headers = ["Authorization": "Bearer \(key)", "Content-Type": "application/octet-stream",
                           "X-Log-Offset": "\(offset)"]
            if let final {
                url += "?name=\(final.name)"
                headers["X-Log-Final"] = final.sha256
            }
            let response: SimpleHTTPClient.Response
            do {
                response = try await send("PATCH", url, headers, bytes)
            } catch {
                continue  // this master does not answer: the next
            }
            let held = response.headers["x-log-offset"].flatMap { Int64($0) }
            switch response.status {
            case 201:
                guard let final else { continue }
                let size = offset + Int64(bytes.count)
                state.withLock { $0 = (size, index, $0.gaveUp) }
                return FileDigest(name: final.name, sha256: final.sha256, size: size)
            case 202:
                state.withLock { $0 = (held ?? offset + Int64(bytes.count), index, $0.gaveUp) }
                return FileDigest(name: "", sha256: "", size: 0)
            case 416:
                // Not at the master's end: go on from what it holds (never past what the log has).
                guard let held, held <= Self.size(of: path) else {
                    give(up: "a master holds more of the log than it has")
                    return nil
                }
                state.withLock { $0 = (held, index, $0.gaveUp) }
                return FileDigest(name: "", sha256: "", size: 0)
            case 403:
                // The master has not applied this attempt's accept yet, or the attempt is no longer this
                // agent's: the next round tries again (the build's end decides which).
                return nil
            case 413, 422, 409:
                give(up: "HTTP \(response.status): \(response.text.prefix(200))")
                return nil
            default:
                continue  // 503 (its database is away), 507 (the store is full), ...: the next master
            }
        }
        return nil
    }

    private func give(up why: String) {
        state.withLock { $0.gaveUp = $0.gaveUp ?? why }
    }

    static func size(of path: String) -> Int64 {
        var info = stat()
        return stat(path, &info) == 0 ? Int64(info.st_size) : 0
    }

    static func read(_ path: String, from offset: Int64, limit: Int) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes = [UInt8](repeating: 0, count: limit)
        let count = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, limit, off_t(offset)) }
        guard count >= 0 else { return nil }
        return Array(bytes[0..<count])
    }
}
