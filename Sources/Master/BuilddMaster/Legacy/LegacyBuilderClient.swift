import BuilddShared
import NIOCore

/// What `status()` of a launchpad-buildd says.
public struct LegacyStatus: Sendable, Equatable {
    public enum State: String, Sendable {
        case idle = "BuilderStatus.IDLE"
        case building = "BuilderStatus.BUILDING"
        case waiting = "BuilderStatus.WAITING"
        case aborting = "BuilderStatus.ABORTING"
    }

    public var state: State
    public var buildID: String?
    public var logTail: [UInt8]?
    /// WAITING: the result, e.g. `BuildStatus.OK`.
    public var buildStatus: String?
    /// WAITING with OK, PACKAGEFAIL or DEPFAIL: result file name -> SHA-1.
    public var filemap: [String: String]
    public var dependencies: String?

    public init(state: State, buildID: String? = nil, logTail: [UInt8]? = nil, buildStatus: String? = nil,
                filemap: [String: String] = [:], dependencies: String? = nil) {
        self.state = state
        self.buildID = buildID
        self.logTail = logTail
        self.buildStatus = buildStatus
        self.filemap = filemap
        self.dependencies = dependencies
    }

    /// Reads a `status()` answer; anything that is not the protocol's struct is malformed.
    public init(_ value: XMLRPCValue) throws {
        guard let fields = value.structValue, let raw = fields["builder_status"]?.stringValue else {
            throw XMLRPCError.malformed("status() answer has no builder_status")
        }
        guard let state = State(rawValue: raw) else { throw XMLRPCError.malformed("unknown builder_status \(raw)") }
        self.state = state
        buildID = fields["build_id"]?.stringValue
        switch fields["logtail"] {
        case .base64(let bytes)?: logTail = bytes
        case .string(let text)?: logTail = Array(text.utf8)
        default: logTail = nil
        }
        buildStatus = fields["build_status"]?.stringValue
        var files: [String: String] = [:]
        for (name, sha1) in fields["filemap"]?.structValue ?? [:] {
            guard let sha1 = sha1.stringValue else { throw XMLRPCError.malformed("filemap entry \(name) is not a string") }
            files[name] = sha1
        }
        filemap = files
        dependencies = fields["dependencies"]?.stringValue
        if state != .idle, buildID == nil { throw XMLRPCError.malformed("\(raw) without build_id") }
    }

    /// What the core's ``LegacyPolicy`` reads of it.
    public var reading: LegacyReading {
        let state: LegacyReading.State = switch self.state {
        case .idle: .idle
        case .building: .building
        case .waiting: .waiting
        case .aborting: .aborting
        }
        return LegacyReading(state: state, buildID: buildID, result: result, logTail: logTail)
    }

    /// launchpad-buildd's `BuildStatus.X` as a result.
    public var result: BuilderResult? {
        guard let buildStatus, buildStatus.hasPrefix("BuildStatus.") else { return nil }
        return BuilderResult(rawValue: String(buildStatus.dropFirst("BuildStatus.".count)))
    }
}

extension LegacyPolicy {
    /// ``decide(_:expected:abortSent:stalledFor:mayTakeWork:deadlines:)`` on what `status()` answered and the
    /// build the database expects.
    public static func decide(_ status: LegacyStatus, expected: LegacyBuilderSnapshot.CurrentBuild?, abortSent: Bool,
                              stalledFor: Double, mayTakeWork: Bool, deadlines: Deadlines) -> Step {
        decide(status.reading, expected: expected?.expectation, abortSent: abortSent, stalledFor: stalledFor,
               mayTakeWork: mayTakeWork, deadlines: deadlines)
    }
}

/// A failed call to a legacy builder, naming the method.
public struct LegacyCallError: Error, CustomStringConvertible, Sendable {
    public let method: String
    public let underlying: any Error & Sendable
    public var description: String { "\(method)(): \(underlying)" }

    /// For metrics: `fault`, `timeout`, `refused`, `http`, `malformed` or `other`.
    public var kind: String {
        switch underlying {
        case XMLRPCError.fault: "fault"
        case XMLRPCError.malformed: "malformed"
        case LegacyHTTPError.timeout: "timeout"
        case LegacyHTTPError.refused: "refused"
        case LegacyHTTPError.status: "http"
        default: "other"
        }
    }
}

/// Timeouts and limits of calls to legacy builders (Launchpad's: 40 s per call, 20 times that for
/// `ensurepresent`, which downloads files).
public struct LegacyCallLimits: Sendable {
    public var callTimeout: Double = 40
    public var ensurePresentFactor: Double = 20
    /// Largest XML-RPC answer read.
    public var maxResponseBytes = 1 << 20
    /// Largest result file or log fetched from `/filecache`.
    public var maxFileBytes = 4 << 30

    public init() {}
}

/// The XML-RPC methods of launchpad-buildd (protocol 1.0) on one builder, and its file cache.
public final class LegacyBuilderClient: Sendable {
    public let url: String
    let connection: LegacyHTTPConnection
    let limits: LegacyCallLimits

    public init(url: String, limits: LegacyCallLimits = .init()) throws {
        self.url = url
        connection = try LegacyHTTPConnection(url: url)
        self.limits = limits
    }

    public func close() { connection.close() }

    /// Calls `method` and returns its answer; every failure is a ``LegacyCallError`` naming the method.
    public func call(_ method: String, _ parameters: [XMLRPCValue] = [], timeout: Double? = nil) async throws -> XMLRPCValue {
        do {
            let body = try await connection.request(
                method: .POST, path: "/rpc", body: XMLRPC.encodeCall(method, parameters), contentType: "text/xml",
                timeout: timeout ?? limits.callTimeout, maxBytes: limits.maxResponseBytes)
            return try XMLRPC.decodeResponse(body)
        } catch let error as XMLRPCError {
            throw LegacyCallError(method: method, underlying: error)
        } catch let error as LegacyHTTPError {
            throw LegacyCallError(method: method, underlying: error)
        } catch {
            throw LegacyCallError(method: method, underlying: LegacyHTTPError.io("\(error)"))
        }
    }

    public func echo(_ values: [XMLRPCValue]) async throws -> [XMLRPCValue] {
        guard let answer = try await call("echo", values).arrayValue else {
            throw LegacyCallError(method: "echo", underlying: XMLRPCError.malformed("echo() did not answer an array"))
        }
        return answer
    }

    /// `info()`: protocol version, architecture tag, build types.
    public func info() async throws -> (protocolVersion: String, archTag: String, buildTypes: [String]) {
        let answer = try await call("info")
        guard let items = answer.arrayValue, items.count >= 2, let version = items[0].stringValue,
              let arch = items[1].stringValue else {
            throw LegacyCallError(method: "info", underlying: XMLRPCError.malformed("info() answer is not [version, arch, types]"))
        }
        let types = items.count > 2 ? (items[2].arrayValue ?? []).compactMap(\.stringValue) : []
        return (version, arch, types)
    }

    public func status() async throws -> LegacyStatus {
        let answer = try await call("status")
        do {
            return try LegacyStatus(answer)
        } catch let error as XMLRPCError {
            throw LegacyCallError(method: "status", underlying: error)
        }
    }

    /// `ensurepresent(sha1, url, user, password)`: whether the builder has (or fetched) the file.
    public func ensurePresent(sha1: String, url: String, user: String, password: String) async throws -> (Bool, String) {
        let answer = try await call("ensurepresent", [.string(sha1), .string(url), .string(user), .string(password)],
                                    timeout: limits.callTimeout * limits.ensurePresentFactor)
        guard let items = answer.arrayValue, items.count == 2 else {
            throw LegacyCallError(method: "ensurepresent", underlying: XMLRPCError.malformed("answer is not [present, info]"))
        }
        let present: Bool = switch items[0] {
        case .bool(let flag): flag
        case .int(let number): number != 0
        default: false
        }
        return (present, items[1].stringValue ?? "")
    }

    /// `build(...)`: the builder's answer status (`BuilderStatus.BUILDING` when it started) and its info.
    public func build(cookie: String, buildType: String, chrootSHA1: String, filemap: [String: String],
                      arguments: [String: XMLRPCValue]) async throws -> (status: String, info: String) {
        let answer = try await call("build", [
            .string(cookie), .string(buildType), .string(chrootSHA1),
            .struct(filemap.mapValues { .string($0) }), .struct(arguments),
        ])
        guard let items = answer.arrayValue, let status = items.first?.stringValue else {
            throw LegacyCallError(method: "build", underlying: XMLRPCError.malformed("answer is not [status, info]"))
        }
        return (status, items.count > 1 ? (items[1].stringValue ?? "") : "")
    }

    public func abort() async throws { _ = try await call("abort") }

    public func clean() async throws { _ = try await call("clean") }

    /// `GET /filecache/NAME` into the artifact store, streamed: checked against `sha1` (launchpad-buildd's
    /// name for it) as it arrives and stored by its SHA-256 only when it matches; never whole in memory.
    public func fetch(_ name: String, sha1 expected: String, into artifacts: ArtifactStore, as fileName: String) async throws -> FileDigest {
        let sink = LegacyFileSink(upload: try artifacts.beginUpload())
        do {
            _ = try await connection.download(path: "/filecache/\(name)", timeout: limits.callTimeout * limits.ensurePresentFactor,
                                              maxBytes: limits.maxFileBytes) { try sink.write($0) }
        } catch {
            sink.discard()
            throw LegacyCallError(method: "GET /filecache/\(name)", underlying: (error as? LegacyHTTPError) ?? .io("\(error)"))
        }
        guard sink.sha1() == expected.lowercased() else {
            sink.discard()
            throw LegacyCallError(method: "GET /filecache/\(name)", underlying: LegacyHTTPError.io("\(fileName) does not match its SHA-1"))
        }
        let (sha256, size) = try await runBlocking(name: "artifact") { try sink.commit() }
        return FileDigest(name: fileName, sha256: sha256, size: size)
    }

    /// Fetches `/filecache/<name>` whole (the build log: bounded by the largest artifact).
    public func fetch(_ name: String) async throws -> [UInt8] {
        do {
            return try await connection.request(method: .GET, path: "/filecache/\(name)", timeout: limits.callTimeout
                                                * limits.ensurePresentFactor, maxBytes: limits.maxFileBytes)
        } catch {
            throw LegacyCallError(method: "GET /filecache/\(name)", underlying: (error as? LegacyHTTPError) ?? .io("\(error)"))
        }
    }
}

/// A file from a legacy builder on its way into the artifact store: each chunk written and hashed (SHA-1,
/// launchpad-buildd's name for it) as it arrives. Written on one event loop, read after the download ended.
final class LegacyFileSink: @unchecked Sendable {
    private let upload: ArtifactStore.Upload
    private var hasher = SHA1()

    init(upload: ArtifactStore.Upload) { self.upload = upload }

    func write(_ buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { bytes in
            hasher.update(bytes)
            try upload.write(bytes)
        }
    }

    func sha1() -> String { hasher.finalizeHex() }

    /// Makes it durable and moves it into place; its SHA-256 and size.
    func commit() throws -> (sha256: String, size: Int64) { (try upload.commit(expectedSHA256: nil), upload.size) }

    func discard() { upload.discard() }
}
