-- Schema 15: what the operator's plots draw, and what the builds page filters on.
--
-- farm_sample: one row per processor per sample (every `serve --sample-interval`, a minute by default), taken by
-- whichever master's sampler gets there first (BuilddStore.recordSample): the queue's depth and oldest wait,
-- the builders busy, idle and failed, the builds that ended since the previous sample by status, and the
-- p50/p99 of the dispatch latency (a build's last NEEDSBUILD line to its BUILDING line) of the builds that
-- started since then. Plots read at most 7 days of these rows, whatever the size of the farm's history; rows
-- older than the retention (8 days) are deleted by the sampler.
CREATE TABLE farm_sample (
    at                  timestamptz NOT NULL,
    processor           text NOT NULL,
    waiting             integer NOT NULL CHECK (waiting >= 0),
    oldest_wait_seconds double precision NOT NULL DEFAULT 0,
    busy                integer NOT NULL DEFAULT 0,
    idle                integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    ended               jsonb NOT NULL DEFAULT '{}',
    dispatch_p50        double precision,
    dispatch_p99        double precision,
    PRIMARY KEY (processor, at)
);
CREATE INDEX farm_sample_by_at ON farm_sample (at);

-- The sampler counts what ended and started in its window from the builds' histories by time.
CREATE INDEX build_event_by_at ON build_event (at);

-- The builds page's time range: a bound on creation time, and the ids it maps to.
CREATE INDEX build_by_created ON build (date_created);
