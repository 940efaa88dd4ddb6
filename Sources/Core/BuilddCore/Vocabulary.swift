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
