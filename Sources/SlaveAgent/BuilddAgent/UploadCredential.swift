import BuilddShared

/// This agent's proof, for one attempt, that it is the builder that accepted it (``AttemptCredential``):
/// the key whose SHA-256 its `accepted` declared. A master admits the key only once it has applied that
/// `accepted`, which may come a moment after the agent starts fetching sources: a refusal soon after the
/// accept is tried again. The key lives here, in memory only: after a restart the agent uploads nothing
/// more for the build.
struct UploadCredential: Sendable {
    let key: String
    let acceptedAt: ContinuousClock.Instant
    /// How long after the accept a refusal may still mean that no master has applied it yet: the job's lease,
    /// and at least ``leastWindowSeconds`` (masters restarting, a backlog of events).
    let window: Duration

    /// Longer than a master's accept timeout (30 s by default): an accept applied later is stale anyway.
    static let leastWindowSeconds = 120
    /// False once a master told the agent to abort the attempt (its accept came too late, or was refused):
    /// a refusal is then final.
    let stillOurs: @Sendable () -> Bool

    /// A master refused the key (403), and none served the request.
    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    /// Runs `operation`, and again with growing pauses while it is refused within `window` of the accept;
    /// a refusal after that is a failure.
    func retryingUntilAccepted<T>(_ operation: () async throws -> T) async throws -> T {
        var pause = Duration.milliseconds(50)
        while true {
            do {
                return try await operation()
            } catch let refused as Refused {
                guard stillOurs(), ContinuousClock.now + pause - acceptedAt < window else {
                    throw BuildProcess.Failure(description: refused.description)
                }
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }
}
