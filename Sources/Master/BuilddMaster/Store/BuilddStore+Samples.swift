import BuilddShared
import Foundation
import Postgres

/// The farm's recent history for the operator's plots: one row per processor per sample in `farm_sample`
/// (schema 15), taken by whichever master's ``FarmSampler`` comes first. A plot reads at most its range of
/// these rows (a week of minutes is 10,080 rows a processor), so what it costs does not grow with the number
/// of builds the farm ever ran.
extension BuilddStore {
    /// How long samples are kept: the longest plot range (7 days) and a day to spare.
    public static let sampleRetentionSeconds = 8 * 86_400

    /// Takes a sample unless another master took one less than `minimumGap` seconds ago; returns the number
    /// of rows written (0 when skipped). Masters serialise on an advisory lock, so two never count one window
    /// twice; the window starts where the previous sample ended, so builds that ended while every master was
    /// down are counted in the next sample rather than lost. Deletes samples older than the retention.
    @discardableResult
    public func recordSample(minimumGap: Double) async throws -> Int {
        let finals = PostgresArray(BuildStatus.allCases.filter { !$0.isActive }.map(\.rawValue))
        let busyStates = PostgresArray(BuilderAvailability.allCases.filter { $0.utilisation == .busy }.map(\.rawValue))
        let failedStates = PostgresArray(BuilderAvailability.allCases.filter { $0.utilisation == .failed }.map(\.rawValue))
        let idleStates = PostgresArray(BuilderAvailability.allCases.filter { $0.utilisation == .idle }.map(\.rawValue))
        // Most masters find the sample taken: they stop here, before reading every builder.
        if let age = try await database.query("SELECT extract(epoch FROM now() - max(at)) AS age FROM farm_sample")
            .first?.optionalDouble("age"), age < minimumGap { return 0 }
        let builders = try await self.builders()
        let states = builders.map { (processors: $0.processors, state: $0.state(silentAfterSeconds: Double(Self.agentSilenceSeconds))) }
        // One (state, processor) pair per builder and processor it serves.
        let pairStates = PostgresArray(states.flatMap { entry in entry.processors.map { _ in entry.state } })
        let pairProcessors = PostgresArray(states.flatMap(\.processors))
        return try await database.transaction { connection in
            // One sampler at a time across masters (the key spells "farmsamp"); under the lock, the gap is checked
            // again (another master may have sampled since the check above).
            try connection.execute("SELECT pg_advisory_xact_lock(7021802119616749936)")
            let last = try connection.query("""
                SELECT extract(epoch FROM max(at)) AS last, extract(epoch FROM now()) AS now FROM farm_sample
                """).first
            let now = try last?.double("now") ?? 0
            if let previous = last?.optionalDouble("last"), now - previous < minimumGap { return 0 }
            // The window: since the previous sample, at most the retention (a farm that sampled nothing for longer
            // counts from there).
            let since = max(last?.optionalDouble("last") ?? (now - minimumGap), now - Double(Self.sampleRetentionSeconds))
            // Each window ends 5 s before its sample and begins 5 s before the previous one: a history line carries
            // the time it was written, and the transaction that wrote it may commit a moment later; a window that
            // ended at the sample's own time lost such lines for good (a fresh-clone run lost a MANUALDEPWAIT).
            let written = try connection.execute("""
                WITH states AS (
                    SELECT * FROM unnest($5::text[], $6::text[]) AS s(state, processor)
                ), ended AS (
                    SELECT p.name AS processor, jsonb_object_agg(x.status, x.n) AS ended
                      FROM (SELECT b.processor_id, e.status, count(*) AS n
                              FROM build_event e JOIN build b ON b.id = e.build_id
                             WHERE e.at > to_timestamp($1) - interval '5 seconds' AND e.at <= now() - interval '5 seconds' AND e.status = ANY($2::text[])
                             GROUP BY b.processor_id, e.status) x
                      JOIN processor p ON p.id = x.processor_id GROUP BY p.name
                ), started AS (
                    SELECT p.name AS processor,
                           percentile_cont(0.5) WITHIN GROUP (ORDER BY w.wait) AS p50,
                           percentile_cont(0.99) WITHIN GROUP (ORDER BY w.wait) AS p99
                      FROM (SELECT b.processor_id, extract(epoch FROM e.at - q.at) AS wait
                              FROM build_event e JOIN build b ON b.id = e.build_id
                              CROSS JOIN LATERAL (SELECT n.at FROM build_event n
                                                   WHERE n.build_id = e.build_id AND n.id < e.id AND n.status = 'NEEDSBUILD'
                                                   ORDER BY n.id DESC LIMIT 1) q
                             WHERE e.at > to_timestamp($1) - interval '5 seconds' AND e.at <= now() - interval '5 seconds' AND e.status = 'BUILDING') w
                      JOIN processor p ON p.id = w.processor_id GROUP BY p.name
                )
                INSERT INTO farm_sample (at, processor, waiting, oldest_wait_seconds, busy, idle, failed, ended,
                                         dispatch_p50, dispatch_p99)
                SELECT now(), p.name,
                       (SELECT count(*) FROM buildqueue q WHERE q.processor_id = p.id AND q.state = 'WAITING'),
                       coalesce((SELECT extract(epoch FROM now() - min(q.date_queued)) FROM buildqueue q
                                  WHERE q.processor_id = p.id AND q.state = 'WAITING'), 0),
                       (SELECT count(*) FROM states s WHERE s.processor = p.name AND s.state = ANY($3::text[])),
                       (SELECT count(*) FROM states s WHERE s.processor = p.name AND s.state = ANY($7::text[])),
                       (SELECT count(*) FROM states s WHERE s.processor = p.name AND s.state = ANY($4::text[])),
                       coalesce(ended.ended, '{}'), started.p50, started.p99
                  FROM processor p LEFT JOIN ended ON ended.processor = p.name
                  LEFT JOIN started ON started.processor = p.name
                """, [since, finals, busyStates, failedStates, pairStates, pairProcessors, idleStates])
            try connection.execute("DELETE FROM farm_sample WHERE at < now() - make_interval(secs => $1)",
                                   [Self.sampleRetentionSeconds])
            return written
        }
    }
}

extension BuilddStore {
    /// One processor's samples over a plot's range, put in buckets by the database (a week is 336 buckets of
    /// 30 minutes, a day 288 of 5): what the plots draw. Each bucket has the largest queue depth and oldest
    /// wait seen in it, the mean builders busy, idle and failed, the p50 as the mean and the p99 as the largest
    /// of its samples' (a bucket's true percentiles would need every wait), and the builds that ended in it.
    public struct PlotBucket: Sendable, Equatable {
        /// The bucket's start, epoch seconds.
        public var start: Double
        public var waiting: Int
        public var oldestWaitSeconds: Double
        public var busy: Double
        public var idle: Double
        public var failed: Double
        public var dispatchP50: Double?
        public var dispatchP99: Double?
    }

    /// The buckets of each processor that has samples in the last `rangeSeconds`, and the builds ended per
    /// `endedBucketSeconds` (an hour) by status; and the database's now.
    public func plotData(rangeSeconds: Int, bucketSeconds: Int, endedBucketSeconds: Int) async throws
        -> (buckets: [String: [PlotBucket]], ended: [String: [Double: [String: Int]]], now: Double) {
        try await database.withConnection { connection in
            let now = try connection.query("SELECT extract(epoch FROM now()) AS now").first?.double("now") ?? 0
            var buckets: [String: [PlotBucket]] = [:]
            for row in try connection.query("""
                SELECT processor, floor(extract(epoch FROM at) / $2) * $2 AS start, max(waiting) AS waiting,
                       max(oldest_wait_seconds) AS oldest, avg(busy) AS busy, avg(idle) AS idle, avg(failed) AS failed,
                       avg(dispatch_p50) AS p50, max(dispatch_p99) AS p99
                  FROM farm_sample WHERE at > now() - make_interval(secs => $1)
                 GROUP BY processor, 2 ORDER BY processor, 2
                """, [rangeSeconds, bucketSeconds]).rows {
                buckets[try row.string("processor"), default: []].append(PlotBucket(
                    start: try row.double("start"), waiting: try row.int("waiting"), oldestWaitSeconds: try row.double("oldest"),
                    busy: try row.double("busy"), idle: try row.double("idle"), failed: try row.double("failed"),
                    dispatchP50: row.optionalDouble("p50"), dispatchP99: row.optionalDouble("p99")))
            }
            // One sum per final status, read from each sample's object by key (a row per status and sample, from
            // jsonb_each, cost eight times as much on a week of samples).
            let finals = BuildStatus.allCases.filter { !$0.isActive }.map(\.rawValue)
            let sums = finals.enumerated().map { "sum(coalesce((ended->>'\($0.element)')::int, 0)) AS s\($0.offset)" }
            var ended: [String: [Double: [String: Int]]] = [:]
            for row in try connection.query("""
                SELECT processor, floor(extract(epoch FROM at) / $2) * $2 AS start, \(sums.joined(separator: ", "))
                  FROM farm_sample WHERE at > now() - make_interval(secs => $1) AND ended <> '{}'
                 GROUP BY 1, 2
                """, [rangeSeconds, endedBucketSeconds]).rows {
                var counts: [String: Int] = [:]
                for (index, status) in finals.enumerated() {
                    let n = try row.int("s\(index)")
                    if n > 0 { counts[status] = n }
                }
                ended[try row.string("processor"), default: [:]][try row.double("start")] = counts
            }
            return (buckets, ended, now)
        }
    }
}
