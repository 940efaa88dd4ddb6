#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The version of the JSON messages this build writes: the lowest that carries what it says, so that a reader
/// of an older release takes it. Releases add optional fields (which readers of older releases ignore, as
/// every reader here ignores fields it does not know) and announce what they understand in `hello`'s
/// capabilities; `v` changes only for a message older readers must not take, and then the older version is
/// still written to any builder that announced no newer one.
public let wireVersion = 1

/// The versions this build reads. A message with any other `v` is refused with `unsupported_version`.
public let readableWireVersions: ClosedRange<Int> = 1...1

/// Largest message either side accepts, in bytes.
public let maxMessageBytes = 256 * 1024

/// A job: master -> agents, on `buildd.jobs` with the processor as routing key.
public struct JobMessage: Codable, Sendable, Equatable {
    public var v: Int = wireVersion
    public var kind: String = "job"
    public var buildID: Int64
    public var attempt: Int32
    public var processor: String
    public var buildType: String
    public var distribution: String
    public var series: String
    public var archTag: String
    public var sourceName: String
    public var sourceVersion: String
    public var sourceFiles: [FileDigest]
    /// Where the agent uploads results: `<master>/v1/builds/<build>/attempts/<attempt>/files/`. The job
    /// carries no secret: the agent that accepts it declares its own upload key (``AttemptCredential``).
    public var uploadURL: String
    public var leaseSeconds: Int
    /// The arch series' chroot tarball (``FileDigest/sha256`` names it at `<master>/v1/chroots/<sha256>`),
    /// when one is set with `buildd-master archseries chroot`: build commands that make a root per build
    /// (`buildd-binarypackage`) get it as `BUILDD_CHROOT`, fetched and checked by the agent.
    public var chroot: FileDigest?
    /// The build's archive (nil: the distribution's primary one), pocket and component.
    public var archive: String?
    public var pocket: String?
    public var component: String?
    /// The apt sources its build dependencies come from, in order (``ArchiveDependencies``), each with its
    /// archive's signing key; nil or empty: the chroot's own sources.
    public var aptSources: [JobAptSource]?
    /// Launchpad's build arguments: the archive is private, build the architecture-independent packages too,
    /// and keep debug symbols.
    public var archivePrivate: Bool?
    public var archIndep: Bool?
    public var buildDebugSymbols: Bool?

    enum CodingKeys: String, CodingKey {
        case v, kind, attempt, processor, distribution, series, chroot, archive, pocket, component
        case buildID = "build_id", buildType = "build_type", archTag = "arch_tag"
        case sourceName = "source_name", sourceVersion = "source_version", sourceFiles = "source_files"
        case uploadURL = "upload_url", leaseSeconds = "lease_seconds", aptSources = "apt_sources"
        case archivePrivate = "archive_private", archIndep = "arch_indep", buildDebugSymbols = "build_debug_symbols"
    }

    /// The suite of its series in its pocket (`noble-security`).
    public var suite: String { pocket.map { $0 == "release" ? series : "\(series)-\($0)" } ?? series }

    public init(buildID: Int64, attempt: Int32, processor: String, buildType: String, distribution: String,
                series: String, archTag: String, sourceName: String, sourceVersion: String,
                sourceFiles: [FileDigest], uploadURL: String, leaseSeconds: Int,
                chroot: FileDigest? = nil) {
        self.buildID = buildID
        self.attempt = attempt
        self.processor = processor
        self.buildType = buildType
        self.distribution = distribution
        self.series = series
        self.archTag = archTag
        self.sourceName = sourceName
        self.sourceVersion = sourceVersion
        self.sourceFiles = sourceFiles
        self.uploadURL = uploadURL
        self.leaseSeconds = leaseSeconds
        self.chroot = chroot
    }
}

/// One line of a job's apt sources: `deb URL SUITE COMPONENT...` (no options: the agent adds `signed-by`
/// for the key it writes) and the archive's ASCII-armoured signing key, if it has one.
public struct JobAptSource: Codable, Sendable, Equatable {
    public var archive: String
    public var line: String
    public var key: String?

    public init(archive: String, line: String, key: String?) {
        self.archive = archive
        self.line = line
        self.key = key
    }
}

/// The events an agent sends, on `buildd.status` with routing key `<builder>.<event>`.
public enum AgentEventKind: String, Codable, Sendable, CaseIterable {
    /// The agent is up (or back) and idle or busy as `state` says.
    case hello
    /// The agent took the job (build, attempt).
    case accepted
    /// Periodic: state, current build and log tail.
    case heartbeat
    /// The build ended with `result`; its files are already in the artifact store.
    case finished
    /// The agent ran its `reset_command` for the reset `reset_attempt` the master asked for (`clean`):
    /// `reset_ok` says whether it succeeded, `message` why not.
    case reset
}

/// One agent event. Fields that do not apply to a kind are absent.
public struct AgentEvent: Codable, Sendable, Equatable {
    public var v: Int = wireVersion
    public var kind: AgentEventKind
    public var builder: String
    /// Random per agent process; with `seq` it lets a master drop replays.
    public var session: String
    /// Increases by one with every event of a session.
    public var seq: Int64
    public var state: AgentState?
    public var buildID: Int64?
    public var attempt: Int32?
    public var logTail: String?
    public var result: BuilderResult?
    public var files: [FileDigest]?
    /// The build log, already uploaded, with its digest.
    public var log: FileDigest?
    public var processors: [String]?
    public var message: String?
    /// `accepted` only: the SHA-256 (hex) of the upload key the agent made for this attempt. The key itself
    /// never crosses the broker; the agent presents it to the masters' artifact routes.
    public var uploadKeySHA256: String?
    /// `reset` only: the reset attempt it ran, and whether it succeeded.
    public var resetAttempt: Int?
    public var resetOK: Bool?
    /// `hello` only (release 1.0.0 and later): the agent's release and its capabilities
    /// (``BuilddRelease/agentCapabilities``). Masters of any release read a hello without them.
    public var release: String?
    public var capabilities: [String]?

    enum CodingKeys: String, CodingKey {
        case v, kind, builder, session, seq, state, attempt, result, files, log, processors, message, release
        case capabilities
        case buildID = "build_id", logTail = "log_tail", uploadKeySHA256 = "upload_key_sha256"
        case resetAttempt = "reset_attempt", resetOK = "reset_ok"
    }

    public init(kind: AgentEventKind, builder: String, session: String, seq: Int64, state: AgentState? = nil,
                buildID: Int64? = nil, attempt: Int32? = nil, logTail: String? = nil, result: BuilderResult? = nil,
                files: [FileDigest]? = nil, log: FileDigest? = nil, processors: [String]? = nil,
                message: String? = nil, uploadKeySHA256: String? = nil) {
        self.kind = kind
        self.builder = builder
        self.session = session
        self.seq = seq
        self.state = state
        self.buildID = buildID
        self.attempt = attempt
        self.logTail = logTail
        self.result = result
        self.files = files
        self.log = log
        self.processors = processors
        self.message = message
        self.uploadKeySHA256 = uploadKeySHA256
    }
}

/// Master -> one agent, on `buildd.control` with the builder name as routing key.
public struct ControlMessage: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable {
        case abort, clean, shutdown
    }

    public var v: Int = wireVersion
    public var command: Command
    public var buildID: Int64?
    public var attempt: Int32?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case v, command, attempt, reason
        case buildID = "build_id"
    }

    public init(command: Command, buildID: Int64? = nil, attempt: Int32? = nil, reason: String? = nil) {
        self.command = command
        self.buildID = buildID
        self.attempt = attempt
        self.reason = reason
    }
}

/// Why a message could not be read. The description is safe to log and to dead-letter.
public struct WireError: Error, CustomStringConvertible, Equatable {
    public enum Code: String, Sendable {
        case tooLarge, malformed, unsupportedVersion, invalidField

        /// `too_large`, `malformed`, `unsupported_version`, `invalid_field`.
        public var metricLabel: String {
            switch self {
            case .tooLarge: "too_large"
            case .malformed: "malformed"
            case .unsupportedVersion: "unsupported_version"
            case .invalidField: "invalid_field"
            }
        }
    }

    public let code: Code
    public let detail: String
    public var description: String { "\(code.rawValue): \(detail)" }

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }
}

private struct Versioned: Decodable { let v: Int? }

/// Encodes and decodes wire messages, checking size, version and fields.
public enum WireCodec {
    public static func encode<T: Encodable>(_ message: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding our own value types cannot fail.
        return Array(try! encoder.encode(message))
    }

    static func decodeChecked<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        guard bytes.count <= maxMessageBytes else {
            throw WireError(.tooLarge, "\(bytes.count) bytes, limit \(maxMessageBytes)")
        }
        let data = Data(bytes)
        let version: Int?
        do {
            version = try JSONDecoder().decode(Versioned.self, from: data).v
        } catch {
            throw WireError(.malformed, "not a JSON object")
        }
        guard let version else { throw WireError(.malformed, "missing field v") }
        guard readableWireVersions.contains(version) else {
            throw WireError(.unsupportedVersion, "version \(version), this build (\(BuilddRelease.version)) reads "
                + "\(readableWireVersions.lowerBound)-\(readableWireVersions.upperBound)")
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw WireError(.malformed, "missing field \(key.stringValue)")
        } catch let DecodingError.typeMismatch(_, context) {
            throw WireError(.malformed, "wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch let DecodingError.dataCorrupted(context) {
            throw WireError(.malformed, "bad value at \(context.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch {
            throw WireError(.malformed, "undecodable")
        }
    }

    /// Decodes an agent event and checks its fields for its kind.
    public static func decodeEvent(_ bytes: [UInt8]) throws -> AgentEvent {
        let event = try decodeChecked(AgentEvent.self, from: bytes)
        guard Naming.isValidName(event.builder) else { throw WireError(.invalidField, "builder name") }
        guard event.seq >= 0 else { throw WireError(.invalidField, "seq") }
        switch event.kind {
        case .accepted, .finished:
            guard let id = event.buildID, id > 0, let attempt = event.attempt, attempt > 0 else {
                throw WireError(.invalidField, "\(event.kind.rawValue) needs build_id and attempt")
            }
            if event.kind == .accepted {
                guard let key = event.uploadKeySHA256, Naming.isValidSHA256(key) else {
                    throw WireError(.invalidField, "accepted needs upload_key_sha256 (64 lowercase hex digits)")
                }
            }
            if event.kind == .finished {
                guard event.result != nil else { throw WireError(.invalidField, "finished needs result") }
                for file in event.files ?? [] {
                    guard Naming.isValidFileName(file.name), Naming.isValidSHA256(file.sha256), file.size >= 0 else {
                        throw WireError(.invalidField, "file entry")
                    }
                }
            }
        case .heartbeat, .hello:
            guard event.state != nil else { throw WireError(.invalidField, "\(event.kind.rawValue) needs state") }
        case .reset:
            guard let attempt = event.resetAttempt, attempt > 0, event.resetOK != nil else {
                throw WireError(.invalidField, "reset needs reset_attempt and reset_ok")
            }
        }
        if let release = event.release, !Naming.isValidVersion(release) || release.utf8.count > 64 {
            throw WireError(.invalidField, "release")
        }
        if let capabilities = event.capabilities {
            guard capabilities.count <= 64, capabilities.allSatisfy(Naming.isValidName) else {
                throw WireError(.invalidField, "capabilities (at most 64 names)")
            }
        }
        if let tail = event.logTail, tail.utf8.count > 16 * 1024 {
            throw WireError(.invalidField, "log_tail too long")
        }
        return event
    }

    public static func decodeJob(_ bytes: [UInt8]) throws -> JobMessage {
        let job = try decodeChecked(JobMessage.self, from: bytes)
        guard job.buildID > 0, job.attempt > 0 else { throw WireError(.invalidField, "build_id/attempt") }
        guard Naming.isValidName(job.processor), Naming.isValidName(job.buildType) else {
            throw WireError(.invalidField, "processor/build_type")
        }
        for source in job.aptSources ?? [] {
            guard Naming.isValidName(source.archive), source.line.hasPrefix("deb http"),
                  !source.line.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "[" || $0 == "]" }) else {
                throw WireError(.invalidField, "apt_sources")
            }
        }
        if let chroot = job.chroot {
            guard Naming.isValidFileName(chroot.name), Naming.isValidSHA256(chroot.sha256), chroot.size >= 0
            else { throw WireError(.invalidField, "chroot") }
        }
        return job
    }

    public static func decodeControl(_ bytes: [UInt8]) throws -> ControlMessage {
        try decodeChecked(ControlMessage.self, from: bytes)
    }
}

/// Rules for names that end up in routing keys, queue names and file paths.
public enum Naming {
    /// Builder, processor, distribution, series and build-type names: `[a-z0-9][a-z0-9.+_-]{0,63}`.
    public static func isValidName(_ name: String) -> Bool { Names.isValid(name) }

    /// A file name that cannot leave its folder: no slash, not `.`/`..`, no leading dot, no control bytes.
    public static func isValidFileName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...255).contains(bytes.count), bytes[0] != UInt8(ascii: ".") else { return false }
        for byte in bytes {
            let ok = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || "._+~-:".utf8.contains(byte)
            guard ok else { return false }
        }
        return true
    }

    /// DISTRIBUTION/SERIES/ARCHTAG, each part a valid name.
    public static func archSeries(_ text: String) -> (distribution: String, series: String, archTag: String)? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 3, parts.allSatisfy(isValidName) else { return nil }
        return (parts[0], parts[1], parts[2])
    }

    /// A Debian source package name as the `build` table takes it (its CHECK, `sourceNamePattern`).
    public static let sourceNamePattern = "^[a-z0-9][a-z0-9.+-]{0,127}$"
    /// A Debian version as the `build` table takes it (its CHECK, `versionPattern`).
    public static let versionPattern = "^[A-Za-z0-9.+~:-]{1,128}$"

    public static func isValidSourceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...128).contains(bytes.count) else { return false }
        for (index, byte) in bytes.enumerated() {
            let alnum = (byte >= 0x30 && byte <= 0x39) || (byte >= 0x61 && byte <= 0x7a)
            if index == 0 { guard alnum else { return false }; continue }
            guard alnum || ".+-".utf8.contains(byte) else { return false }
        }
        return true
    }

    public static func isValidVersion(_ version: String) -> Bool {
        let bytes = Array(version.utf8)
        guard (1...128).contains(bytes.count) else { return false }
        return bytes.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a)
            || ".+~:-".utf8.contains($0) }
    }

    public static func isValidSHA256(_ digest: String) -> Bool {
        digest.utf8.count == 64 && digest.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

extension AgentEvent {
    /// The typed report of a decoded event (``WireCodec/decodeEvent(_:)`` checked its fields for its kind),
    /// sent by the broker user `user`.
    public func report(user: String?) throws -> BuilderReport {
        try report(sender: .agent(user: user))
    }

    /// The typed report of this event as `sender` sent it. Throws when a field its kind needs is missing.
    public func report(sender: BuilderReport.Sender) throws -> BuilderReport {
        let current: AttemptRef? = if let buildID, let attempt { AttemptRef(build: buildID, attempt: attempt) } else { nil }
        let typed: BuilderReport.Event
        switch kind {
        case .hello, .heartbeat:
            guard let state else { throw WireError(.invalidField, "\(kind.rawValue) needs state") }
            typed = kind == .hello ? .hello(state, current: current) : .heartbeat(state, current: current, logTail: logTail)
        case .accepted:
            guard let current else { throw WireError(.invalidField, "accepted needs build_id and attempt") }
            guard let key = uploadKeySHA256, Naming.isValidSHA256(key) else {
                throw WireError(.invalidField, "accepted needs upload_key_sha256 (64 lowercase hex digits)")
            }
            typed = .accepted(current, uploadKey: key)
        case .finished:
            guard let current else { throw WireError(.invalidField, "finished needs build_id and attempt") }
            guard let result else { throw WireError(.invalidField, "finished needs result") }
            typed = .finished(current, result, files: files ?? [], log: log)
        case .reset:
            guard let resetAttempt, resetAttempt > 0, let resetOK else {
                throw WireError(.invalidField, "reset needs reset_attempt and reset_ok")
            }
            typed = .reset(attempt: resetAttempt, ok: resetOK)
        }
        var report = BuilderReport(builder: builder, session: session, seq: seq, event: typed, message: message,
                                   sender: sender)
        if kind == .hello, let release {
            report.announcement = AgentAnnouncement(release: release, capabilities: capabilities ?? [])
        }
        return report
    }
}
