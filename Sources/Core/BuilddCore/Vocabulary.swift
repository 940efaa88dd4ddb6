/// A file with its digest.
public struct FileDigest: Codable, Sendable, Equatable, Hashable {
    public var name: String
    public var sha256: String
    public var size: Int64

    public init(name: String, sha256: String, size: Int64) {
        self.name = name
        self.sha256 = sha256
        self.size = size
    }
}

/// What an agent is doing.
public enum AgentState: String, Codable, Sendable, CaseIterable {
    case idle = "IDLE"
    case building = "BUILDING"
    case aborting = "ABORTING"
}

/// One attempt of one build: the fencing token every event about a build carries.
public struct AttemptRef: Hashable, Sendable, CustomStringConvertible {
    public let build: Int64
    public let attempt: Int32

    public init(build: Int64, attempt: Int32) {
        self.build = build
        self.attempt = attempt
    }

    public var description: String { "build \(build) attempt \(attempt)" }
}

/// A result file or log is written once per attempt: what a second upload under the same name comes to.
public enum UploadDecision: Equatable, Sendable {
    /// The first upload of this name: store it.
    case record
    /// The same bytes again (a retry whose answer was lost): nothing to change, and it succeeds.
    case alreadyStored
    /// Other bytes under a name already stored: refused, the first stays.
    case refused(String)

    public static func of(name: String, sha256: String, size: Int64, existing: FileDigest?) -> UploadDecision {
        guard let existing else { return .record }
        if existing.sha256 == sha256 && existing.size == size { return .alreadyStored }
        return .refused("\(name) is already stored for this attempt with other contents (sha256 \(existing.sha256)); "
                        + "a file is written once")
    }
}
