import BuilddShared
import Foundation
import Logging
import Synchronization

/// Delivers build events to webhooks: each event by HTTP POST to each webhook that wants it (its statuses; a
/// private build's only to webhooks allowed them), signed with HMAC-SHA256 under the webhook's secret
/// (`X-Buildd-Signature: t=UNIX,sha256=HEX` over `UNIX.BODY`), with an `Idempotency-Key` that stays the same
/// across retries. A webhook's events go in commit order, one at a time; its cursor moves only past what its
/// receiver answered 2xx. A failure backs off (1 s, doubling, at most an hour) and the webhook is retried
/// until it has failed for `giveUpAfter` (a day by default), then disabled until `webhook enable`.
///
/// One master delivers at a time (a lease in the database, like the broker's event publisher); each webhook
/// is delivered by a task of its own, so a slow receiver holds up no other.
public final class WebhookDeliverer: Sendable {
    let store: BuilddStore
    let holder: String
    let leaseSeconds: Double
    let giveUpAfter: Double
    let logger: Logger
    /// Events of the current round already taken by a receiver, per webhook: a round that fails part way is
    /// read again, and these are not sent twice by this master.
    private let taken = Mutex<[Int: Set<Int64>]>([:])
    static let batch = 50
    static let timeoutSeconds = 10

    public init(store: BuilddStore, name: String, buildLeaseSeconds: Int, giveUpAfter: Double, logger: Logger) {
        self.store = store
        holder = "\(name)/\(getpid())/\(randomHexToken(bytes: 3))"
        leaseSeconds = min(10, max(2, Double(buildLeaseSeconds) / 3))
        self.giveUpAfter = giveUpAfter
        self.logger = logger
    }

    /// The pause after the `failures`-th failure in a row: 1 s doubling to at most an hour.
    public static func backoff(failures: Int) -> Double { min(3600, Double(1 << min(failures, 12))) }

    public func run() async {
        var holding = false
        var busy: [Int: Task<Void, Never>] = [:]
        while !Task.isCancelled {
            do {
                // No webhook: a read a second, no lease taken (no write).
                guard try await store.anyWebhookEnabled() else {
                    if holding { try await store.releaseWebhookDeliverer(holder: holder) }
                    holding = false
                    try await Task.sleep(for: .seconds(1))
                    continue
                }
                guard try await store.holdWebhookDeliverer(holder: holder, leaseSeconds: leaseSeconds) else {
                    if holding { logger.notice("webhooks: another master delivers now") }
                    holding = false
                    try await Task.sleep(for: .seconds(leaseSeconds / 2))
                    continue
                }
                if !holding { logger.info("webhooks: this master delivers") }
                holding = true
                let running = self.running.withLock { $0 }
                busy = busy.filter { running.contains($0.key) }
                for hook in try await store.dueWebhooks() where !running.contains(hook.id) && busy[hook.id] == nil {
                    busy[hook.id] = Task { await self.round(hook.id) }
                }
                try await Task.sleep(for: .milliseconds(500))
            } catch is CancellationError {
                break
            } catch {
                logger.warning("webhooks: cannot read them; trying again", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
        }
        for task in busy.values { task.cancel() }
        if holding { try? await store.releaseWebhookDeliverer(holder: holder) }
    }

    private let running = Mutex<Set<Int>>([])

    /// Delivers what a webhook has not had yet, in order, until its receiver fails or nothing is left.
    func round(_ id: Int) async {
        guard running.withLock({ $0.insert(id).inserted }) else { return }
        defer { running.withLock { _ = $0.remove(id) } }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        do {
            // Read now, while no other round of it runs: where the last round left its cursor.
            guard let hook = try await store.dueWebhooks(id: id).first else { return }
            var cursor = hook.cursor
            while !Task.isCancelled {
                let (messages, next) = try await store.eventsToPublish(after: cursor, limit: Self.batch)
                guard let next else { return }
                var delivered: [BuilddStore.DeliveryAttempt] = []
                let already = taken.withLock { $0[hook.id] ?? [] }
                for message in messages where hook.wants(message) && !already.contains(message.event) {
                    let attempt = await post(message, body: Array(try encoder.encode(message)), to: hook)
                    if let status = attempt.httpStatus, (200..<300).contains(status) {
                        delivered.append(attempt)
                        taken.withLock { $0[hook.id, default: []].insert(message.event) }
                        continue
                    }
                    let failures = hook.failures
                    let disabled = try await store.webhookFailed(
                        id: hook.id, attempt: attempt, delivered: delivered, retryAfter: Self.backoff(failures: failures),
                        giveUpAfter: giveUpAfter)
                    BuilddMetrics.webhookDelivery(ok: false)
                    let metadata: Logger.Metadata = ["webhook": "\(hook.name)", "event.id": "\(message.event)",
                                                     "error": "\(attempt.error ?? attempt.httpStatus.map { "HTTP \($0)" } ?? "?")"]
                    if disabled {
                        logger.error("webhook disabled: it failed for longer than the give-up time", metadata: metadata)
                    } else if failures == 0 || failures % 10 == 0 {
                        logger.warning("webhook delivery failed; retrying with backoff",
                                       metadata: metadata.merging(["failures": "\(failures + 1)"]) { $1 })
                    }
                    return
                }
                try await store.webhookDelivered(id: hook.id, through: next, attempts: delivered)
                for _ in delivered { BuilddMetrics.webhookDelivery(ok: true) }
                taken.withLock { $0[hook.id] = nil }
                cursor = next
            }
        } catch {
            logger.warning("webhooks: a round failed; trying again", metadata: ["webhook.id": "\(id)", "error": "\(error)"])
        }
    }

    /// One POST; its outcome for the delivery log.
    func post(_ message: BuilddStore.BuildEventMessage, body: [UInt8], to hook: BuilddStore.DueWebhook) async
        -> BuilddStore.DeliveryAttempt {
        let started = ContinuousClock.now
        let timestamp = Int(Date().timeIntervalSince1970)
        let headers = [
            "Content-Type": "application/json", "User-Agent": "buildd-master",
            "X-Buildd-Event": "build.\(message.status)", "X-Buildd-Webhook": hook.name,
            "Idempotency-Key": "webhook-\(hook.id)-event-\(message.event)",
            "X-Buildd-Signature": HMACSHA256.signature(secret: hook.secret, timestamp: timestamp, body: body),
        ]
        let url = hook.url
        func elapsed() -> Int {
            let duration = ContinuousClock.now - started
            return Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
        }
        do {
            let response = try await runBlocking(name: "webhook") {
                try SimpleHTTPClient.send(method: "POST", url: url, headers: headers, body: .bytes(body),
                                          timeoutSeconds: Self.timeoutSeconds, maxResponseBytes: 64 * 1024)
            }
            let ok = (200..<300).contains(response.status), text = response.text.prefix(200)
            return .init(message: message, httpStatus: response.status,
                         error: ok ? nil : "HTTP \(response.status)" + (text.isEmpty ? "" : ": \(text)"), milliseconds: elapsed())
        } catch {
            return .init(message: message, httpStatus: nil, error: "\(error)", milliseconds: elapsed())
        }
    }
}
