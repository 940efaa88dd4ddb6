import Synchronization

/// The per-key tallies of ``NoiseRule`` in one process (a master's event consumer, its HTTP API). Keys are
/// bounded: when more than `maxKeys` are tallied, those whose window ended are dropped.
public final class RefusalLog: Sendable {
    private let tallies = Mutex<[String: NoiseRule.Tally]>([:])
    private let maxKeys: Int

    public init(maxKeys: Int = 10_000) { self.maxKeys = maxKeys }

    public func note(_ key: String, now: Double) -> NoiseRule.Verdict {
        tallies.withLock { tallies in
            if tallies.count >= maxKeys {
                tallies = tallies.filter { now - $0.value.windowStart < NoiseRule.window }
                if tallies.count >= maxKeys { tallies.removeAll() }
            }
            var tally = tallies[key]
            let verdict = NoiseRule.note(&tally, now: now)
            tallies[key] = tally
            return verdict
        }
    }
}

extension ContinuousClock.Instant {
    /// Seconds since this process's first reading of the clock: a monotonic time for the pure rules that
    /// take their time as a number.
    public var secondsSinceStart: Double { (self - processStart).inSeconds }
}

private let processStart = ContinuousClock.now
