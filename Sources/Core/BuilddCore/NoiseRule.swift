/// What a flood of refused messages or requests costs, and when it breaks a builder. Refusals are counted
/// per key (a builder, or a route and reason) in windows of a minute: the first ``linesPerMinute`` of a
/// window are logged, the rest only counted (in the metrics always), and the next line logged carries how
/// many refusals it stands for. A builder whose messages are refused ``floodPerMinute`` times in one window
/// is marked not ok with the reason.
public enum NoiseRule {
    public static let window: Double = 60
    public static let linesPerMinute = 10
    public static let floodPerMinute = 100

    /// One key's refusals in its current window.
    public struct Tally: Equatable, Sendable {
        public var windowStart: Double
        /// Refusals in this window.
        public var count: Int
        /// Refusals not logged since the last line that was.
        public var unlogged: Int

        public init(windowStart: Double, count: Int = 0, unlogged: Int = 0) {
            self.windowStart = windowStart
            self.count = count
            self.unlogged = unlogged
        }
    }

    /// What to do with one refusal.
    public struct Verdict: Equatable, Sendable {
        /// Write a log line for it.
        public let log: Bool
        /// The refusals that line stands for: this one and those not logged before it.
        public let standsFor: Int
        /// This refusal is the window's ``floodPerMinute``th: mark the builder not ok (once per window).
        public let flood: Bool
    }

    /// Counts one refusal at `now` (seconds) into `tally` (nil: the key's first).
    public static func note(_ tally: inout Tally?, now: Double) -> Verdict {
        var current = tally ?? Tally(windowStart: now)
        if now - current.windowStart >= window {
            current = Tally(windowStart: now, count: 0, unlogged: current.unlogged)
        }
        current.count += 1
        let log = current.count <= linesPerMinute
        let verdict = Verdict(log: log, standsFor: log ? current.unlogged + 1 : 0, flood: current.count == floodPerMinute)
        current.unlogged = log ? 0 : current.unlogged + 1
        tally = current
        return verdict
    }
}
