import AMQP
import Synchronization

/// Whether this master takes events from the status shards.
///
/// Each status shard has a single active consumer: the master holding it is the only one applying its
/// builders' events. A master that cannot reach the database cannot apply them, and holding its shards
/// would stop every builder they carry - heartbeats unapplied, leases expiring, builds requeued - for as
/// long as its database link is down. So it steps down: after ``stepDownAfter(leaseSeconds:)`` of failing
/// to apply, or of waiting for the database to answer one apply (a cut link may fail a statement only after
/// its TCP timeout, and a reconnect tries every host of the URL in turn), it makes its broker connection again without consuming (the broker requeues what it had not
/// acknowledged, and each shard's next consumer, on another master, becomes active), and consumes again,
/// as a standby behind the masters now active, once the database answers.
///
/// A database that answers and still fails the writes events make (out of disk: it takes what fits in its
/// pages' free space, and fails what needs a new page) would have the master take the shards back a second
/// after each step-down, and hand them on again a patience later, over and over. So the master holds down:
/// it consumes again no sooner than ``holdDown(afterStepDownsInARow:)`` after stepping down, a wait that
/// doubles with each step-down that came within a lease of consuming again and was the database's own
/// refusal (an error it answered with, not a link that failed: a master cut off again and again, each time
/// for a new outage, comes back within a second of each heal).
public final class StatusShardIntake: Sendable {
    private let on = Mutex(true)

    /// The step-downs in a row, and when this master last stepped down and last consumed again.
    private struct Downs {
        var inARow = 0
        var steppedDownAt: ContinuousClock.Instant?
        var resumedAt: ContinuousClock.Instant?
    }
    private let downs = Mutex(Downs())

    /// How long one database call on the event path, or for an upload's admission, may go unanswered:
    /// ``stepDownAfter(leaseSeconds:)``.
    public let patience: Duration

    public init(leaseSeconds: Int = 30) {
        patience = Self.stepDownAfter(leaseSeconds: leaseSeconds)
    }

    private let lastFailure = Mutex<String?>(nil)

    public var isOn: Bool { on.withLock { $0 } }

    /// Why applying events failed when this master last stepped down (what `/healthz` says).
    public var whyDown: String? { lastFailure.withLock { $0 } }

    /// Records why applying events failed.
    func note(failure: String) { lastFailure.withLock { $0 = failure } }

    /// Turns consuming off; false when it was off already. A step-down within a lease (three patiences) of
    /// consuming again, for a failure the database answered with (`refusedByTheDatabase`), is one more in a
    /// row; any other starts the count again.
    public func stepDown(refusedByTheDatabase: Bool, at now: ContinuousClock.Instant = .now) -> Bool {
        guard on.withLock({ was in defer { was = false }; return was }) else { return false }
        downs.withLock { downs in
            let flapped = refusedByTheDatabase && downs.resumedAt.map { now - $0 < patience * 3 } ?? false
            downs.inARow = flapped ? downs.inARow + 1 : 1
            downs.steppedDownAt = now
        }
        return true
    }

    /// Turns consuming on again; false when it was on already.
    public func resume(at now: ContinuousClock.Instant = .now) -> Bool {
        guard on.withLock({ was in defer { was = true }; return !was }) else { return false }
        downs.withLock { $0.resumedAt = now }
        return true
    }

    /// The step-downs in a row (``stepDown(refusedByTheDatabase:at:)``) and the hold-down they give.
    public var holdDown: (stepDownsInARow: Int, wait: Duration) {
        downs.withLock { ($0.inARow, Self.holdDown(afterStepDownsInARow: $0.inARow)) }
    }

    /// Whether the hold-down since the last step-down is over.
    public func holdDownIsOver(at now: ContinuousClock.Instant = .now) -> Bool {
        downs.withLock { downs in
            guard let since = downs.steppedDownAt else { return true }
            return now - since >= Self.holdDown(afterStepDownsInARow: downs.inARow)
        }
    }

    /// How long a master waits after its `count`-th step-down in a row before it consumes again: 1 s (as
    /// soon as the database answers, for an outage that ends), then 2, 4, 8 and 16 s, and at most 30 s.
    public static func holdDown(afterStepDownsInARow count: Int) -> Duration {
        count <= 1 ? .seconds(1) : min(.seconds(30), .seconds(1 << min(count - 1, 5)))
    }

    /// How long applying may fail before the master steps down: a third of the lease, so the shards move
    /// before the builders' leases run out (at least one second, so a blip does not move them).
    public static func stepDownAfter(leaseSeconds: Int) -> Duration { .seconds(max(1, leaseSeconds / 3)) }

    /// Subscribes to every status shard on the connection's consume channel when consuming is on (run by
    /// the broker client's setup on each new connection).
    func consumeIfOn(_ connection: AMQPConnection) throws {
        guard isOn else { return }
        for shard in 0..<BrokerTopology.statusShards {
            try connection.consume(queue: BrokerTopology.statusShardQueue(shard), channel: AMQPClient.consumeChannel)
        }
    }

    /// The answer of `operation` (a database call) when it comes within `limit`, else nil: the caller goes
    /// on at once (a master whose database link is cut answers 503 rather than holding an agent's upload for
    /// a TCP timeout), while the call runs to its end in the background and its answer, or error, is dropped.
    public static func answer<T: Sendable>(within limit: Duration,
                                           _ operation: @escaping @Sendable () async throws -> T) async throws -> T? {
        let once = OnceContinuation<T?>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            let timer = Task {
                try await Task.sleep(for: limit)
                once.resume(with: .success(nil))
            }
            Task {
                let result: Result<T?, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                timer.cancel()
                once.resume(with: result)
            }
        }
    }
}

/// A continuation resumed by whichever of two tasks comes first.
final class OnceContinuation<T: Sendable>: Sendable {
    private let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func set(_ continuation: CheckedContinuation<T, any Error>) { slot.withLock { $0 = continuation } }

    func resume(with result: Result<T, any Error>) { slot.withLock { $0.take() }?.resume(with: result) }
}
