import BuilddShared
import Logging

/// What a builder says when asked how it is (launchpad-buildd's `status()`).
public struct SlaveStatus: Sendable, Equatable {
    public enum State: String, Sendable {
        case idle = "BuilderStatus.IDLE"
        case building = "BuilderStatus.BUILDING"
        case waiting = "BuilderStatus.WAITING"
        case aborting = "BuilderStatus.ABORTING"
        /// An agent that has not been heard from recently (agents push; nothing was asked).
        case offline = "BuilderStatus.OFFLINE"
        /// Kept out of automatic dispatch by an operator (buildd's, not a launchpad-buildd state).
        case manual = "BuilderStatus.MANUAL"
    }

    public var state: State
    public var buildCookie: String?

    public init(state: State, buildCookie: String? = nil) {
        self.state = state
        self.buildCookie = buildCookie
    }
}

/// The way to ask one builder for its status. A status call that throws means the builder is broken.
public protocol BuilderSlave: Sendable {
    func status() async throws -> SlaveStatus
}

/// A builder as the scanner sees it.
public final class ScannedBuilder: @unchecked Sendable {
    // Mutated only by the BuilderGroup that owns it, one call at a time.
    public let name: String
    public let slave: any BuilderSlave
    public internal(set) var builderok: Bool
    public internal(set) var failnotes: String?

    public init(name: String, slave: any BuilderSlave, builderok: Bool = true, failnotes: String? = nil) {
        self.name = name
        self.slave = slave
        self.builderok = builderok
        self.failnotes = failnotes
    }
}

/// The builders of one processor (the seed's `BuilderGroup`).
///
/// ``firstAvailable()`` and ``countAvailable()`` ask each ok builder for its status; a builder whose
/// status call fails is marked broken (`builderok = false`, the error as `failnotes`, in the database
/// too when the group has a store) and skipped from then on.
public final class BuilderGroup: @unchecked Sendable {
    // Like the original, a group is used by one scan at a time.
    public var builders: [ScannedBuilder]
    let logger: Logger
    let store: BuilddStore?

    public init(logger: Logger, store: BuilddStore? = nil, builders: [ScannedBuilder] = []) {
        self.logger = logger
        self.store = store
        self.builders = builders
    }

    /// The first ok builder that says it is idle, or nil.
    public func firstAvailable() async -> ScannedBuilder? {
        for builder in builders where builder.builderok {
            if await isIdle(builder) { return builder }
        }
        return nil
    }

    /// How many ok builders say they are idle.
    public func countAvailable() async -> Int {
        var count = 0
        for builder in builders where builder.builderok {
            if await isIdle(builder) { count += 1 }
        }
        return count
    }

    private func isIdle(_ builder: ScannedBuilder) async -> Bool {
        do {
            return try await builder.slave.status().state == .idle
        } catch {
            await markBroken(builder, reason: "status() failed: \(error)")
            return false
        }
    }

    func markBroken(_ builder: ScannedBuilder, reason: String) async {
        builder.builderok = false
        builder.failnotes = reason
        logger.warning("builder marked broken", metadata: ["builder.name": "\(builder.name)", "reason": "\(reason)"])
        guard let store else { return }
        do {
            try await store.markBuilderFailed(builder.name, reason: reason)
        } catch let error as StoreError where error.code == .notFound {
            // A builder known only to this group (as in the seed's mocks).
        } catch {
            logger.warning("could not record broken builder", metadata: ["error": "\(error)"])
        }
    }
}

/// An agent's status as its last events left it in the database.
public struct AgentSlave: BuilderSlave {
    public let summary: BuilderSummary
    public let silentAfterSeconds: Double

    public init(summary: BuilderSummary, silentAfterSeconds: Double) {
        self.summary = summary
        self.silentAfterSeconds = silentAfterSeconds
    }

    public func status() async throws -> SlaveStatus {
        switch summary.availability(silentAfterSeconds: silentAfterSeconds) {
        case .idle: return SlaveStatus(state: .idle)
        case .building: return SlaveStatus(state: .building, buildCookie: summary.currentBuild.map { "\($0)" })
        case .aborting: return SlaveStatus(state: .aborting, buildCookie: summary.currentBuild.map { "\($0)" })
        case .manual: return SlaveStatus(state: .manual)
        // Ran a build and not reset yet: not ready for a job, as a launchpad-buildd builder whose build
        // waits to be collected.
        case .dirty, .cleaning: return SlaveStatus(state: .waiting)
        case .offline, .failed, .removed: return SlaveStatus(state: .offline)
        }
    }
}
