import Synchronization
import BuilddShared
import Metrics

/// The master's metrics, through swift-metrics (exported at `/metrics` in Prometheus text format by
/// ``MetricsExporter``). Names follow Prometheus conventions: seconds, `_total` for counters.
public enum BuilddMetrics {
    /// An event that was dead-lettered, by why: `too_large`, `malformed`, `unsupported_version`,
    /// `invalid_field`, `routing_key`, `not_allowed`, `apply_failed` (a poison event).
    public static func rejected(_ reason: String) {
        Counter(label: "buildd_messages_rejected_total", dimensions: [("reason", reason)]).increment()
    }

    /// From a build's claim to its builder's `accepted`.
    public static func dispatchLatency(seconds: Double) {
        Timer(label: "buildd_dispatch_latency_seconds").recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    /// From a build's start to its end, by final status.
    public static func buildDuration(status: String, seconds: Double) {
        Timer(label: "buildd_build_duration_seconds", dimensions: [("status", status)])
            .recordNanoseconds(Int64(max(0, seconds) * 1e9))
    }

    /// Build events published on `buildd.events` (and `.private`), and how old the last one was when the
    /// broker confirmed it (from its commit: what a subscriber waits).
    public static func eventsPublished(_ count: Int, ageSeconds: Double) {
        Counter(label: "buildd_events_published_total").increment(by: count)
        Gauge(label: "buildd_events_publish_age_seconds").record(ageSeconds)
    }

    public static func webhookDelivery(ok: Bool) {
        Counter(label: "buildd_webhook_deliveries_total", dimensions: [("outcome", ok ? "delivered" : "failed")]).increment()
    }

    public static func jobsPublished(_ count: Int, processor: String) {
        Counter(label: "buildd_jobs_published_total", dimensions: [("processor", processor)]).increment(by: count)
    }

    /// A refused HTTP request, by route (`upload`, `source`, `api`) and reason (`missing_token`,
    /// `token_refused`, `bad_name`, `bad_kind`, `bad_checksum_header`, `checksum_mismatch`, `too_large`).
    public static func httpRefused(route: String, reason: String) {
        Counter(label: "buildd_http_refused_total", dimensions: [("route", route), ("reason", reason)]).increment()
    }

    /// This master stepped down from the status shards: it could not apply events (database unreachable or
    /// refusing writes). `buildd_status_shards_hold_down_seconds`: how long it waits before consuming again
    /// (``StatusShardIntake/holdDown(afterStepDownsInARow:)``; above 1 s, it is stepping down over and over).
    public static func steppedDown(holdDown: Duration) {
        Counter(label: "buildd_status_shards_stepped_down_total").increment()
        Gauge(label: "buildd_status_shards_consuming").record(0)
        Gauge(label: "buildd_status_shards_hold_down_seconds").record(Double(holdDown.components.seconds))
    }

    /// This master consumes the status shards (1), or stepped down from them (0).
    public static func consumingStatusShards() { Gauge(label: "buildd_status_shards_consuming").record(1) }

    /// What this master found at a scrape: whether its database takes writes (1), refuses them (0: read-only,
    /// a standby), or did not answer (-1); and the bytes free in the artifact store.
    public static func storage(databaseAcceptsWrites: Bool?, artifactStoreFreeBytes: Int64?) {
        Gauge(label: "buildd_database_accepts_writes").record(databaseAcceptsWrites.map { $0 ? 1 : 0 } ?? -1)
        if let artifactStoreFreeBytes { Gauge(label: "buildd_artifact_store_free_bytes").record(artifactStoreFreeBytes) }
    }

    /// A build machine's enrolment, by outcome: `enrolled`, `join_token_refused`, `join_token_expired`,
    /// `join_token_used`, `invalid`, `broker_failed`.
    public static func enrolment(outcome: String) {
        Counter(label: "buildd_enrolments_total", dimensions: [("outcome", outcome)]).increment()
    }

    public static func legacyPoll() { Counter(label: "buildd_legacy_polls_total").increment() }

    /// A legacy builder's fault, by kind: `fault`, `timeout`, `refused`, `http`, `malformed`, `other`.
    public static func legacyFault(_ kind: String) {
        Counter(label: "buildd_legacy_faults_total", dimensions: [("kind", kind)]).increment()
    }

    /// The label sets of `buildd_builders_short` last recorded, so that a group whose builds all started
    /// drops to zero instead of keeping its last value.
    private static let shortLabels = Mutex<Set<[String]>>([])

    /// `buildd_builders_short{processor, constraints}`: per processor and constraint set, how many more idle
    /// builders it would take to start every waiting build now (``BuilderDemand/shortfall(waiting:idle:)``):
    /// what an autoscaler starts machines for.
    public static func record(shortfall: [BuilderShortfall]) {
        var seen = Set<[String]>()
        for group in shortfall {
            let labels = [group.processor, BuilderDemand.label(group.requirements)]
            seen.insert(labels)
            Gauge(label: "buildd_builders_short", dimensions: [("processor", labels[0]), ("constraints", labels[1])])
                .record(group.short)
        }
        let gone = shortLabels.withLock { previous -> Set<[String]> in
            defer { previous = seen }
            return previous.subtracting(seen)
        }
        for labels in gone {
            Gauge(label: "buildd_builders_short", dimensions: [("processor", labels[0]), ("constraints", labels[1])]).record(0)
        }
    }

    /// Queue and builder gauges, from one snapshot of the database.
    public static func record(_ snapshot: FarmSnapshot) {
        for processor in snapshot.processors {
            Gauge(label: "buildd_queue_depth", dimensions: [("processor", processor.name)]).record(processor.waiting)
            Gauge(label: "buildd_queue_oldest_wait_seconds", dimensions: [("processor", processor.name)])
                .record(processor.oldestWaitSeconds)
        }
        for (state, count) in snapshot.builderStates {
            Gauge(label: "buildd_builders", dimensions: [("state", state)]).record(count)
        }
    }
}

/// What the metrics gauges show: per processor its waiting builds and the oldest wait; builders by state.
public struct FarmSnapshot: Sendable {
    public struct Processor: Sendable {
        public var name: String
        public var waiting: Int
        public var oldestWaitSeconds: Double
    }

    public var processors: [Processor]
    /// `idle`, `building`, `aborting`, `offline`, `manual`, `failed`, `disabled` -> count (every state present).
    public var builderStates: [String: Int]
}
