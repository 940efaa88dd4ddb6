# Sourced by deploy/localfarm: the `bench-ui` command, the operator's pages over a large history.
# Fills a fresh database with BUILDS builds (default 1,000,000) made over the last 30 days on four processors
# and 40 builders (three history lines each: submitted, started, ended; a few thousand still waiting) and a week
# of per-minute farm samples (b-7 has built nothing: the case a filter's index must serve fast), then asks one master (release build) for the builds page with each filter, a deep
# page, a build, a builder, and each plot range, REQUESTS times each (default 50: more than five on each of the
# master's eight connections, where PostgreSQL may switch a prepared statement to its generic plan), over HTTP with curl. Prints
# p50 / p95 / max per page in milliseconds, marks any p95 at or over 200 ms, and times the master's own sampler
# (the statement every master runs once a minute) on that history. Writes the table to .localfarm/bench/ui.txt.

cmd_bench_ui() {
    local builds="${1:-1000000}" requests="${2:-50}"
    trap down EXIT
    services
    cd "$ROOT"
    log "building buildd-master (release)"
    mkdir -p "$STATE/bench"
    swift build -c release --product buildd-master > "$STATE/bench/release-build.log" 2>&1 \
        || die "the release build failed: see $STATE/bench/release-build.log"
    local master_bin bench="$STATE/bench" db=buildd_bench_ui
    master_bin="$(swift build -c release --show-bin-path)/buildd-master"
    rm -rf "$bench/ui-artifacts" && mkdir -p "$bench/ui-artifacts"
    fresh_target "$db" buildd-bench-ui
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/$db"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-bench-ui"
    "$master_bin" migrate >/dev/null
    local p
    for p in amd64 arm64 riscv64 s390x; do
        "$master_bin" processor add "$p" >/dev/null
        "$master_bin" archseries add "ubuntu/noble/$p" --processor "$p" >/dev/null
    done
    local psql=(psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db")
    local started=$SECONDS chunk=200000 from=1 to
    log "making $builds builds over 30 days with their histories (in steps of $chunk)"
    "${psql[@]}" >/dev/null <<SQL
INSERT INTO builder (name, kind, builderok, failnotes)
SELECT 'b-' || i, 'agent', i % 10 <> 0, CASE WHEN i % 10 = 0 THEN 'disk replaced' END FROM generate_series(1, 40) i;
INSERT INTO builder_processor (builder_id, processor_id)
SELECT b.id, p.id FROM builder b JOIN processor p ON p.id = 1 + (b.id - 1) % 4;
SQL
    while [ "$from" -le "$builds" ]; do
        to=$((from + chunk - 1)); [ "$to" -le "$builds" ] || to=$builds
        "${psql[@]}" >/dev/null <<SQL
-- Build i was made (30 days) * (1 - i / N) ago, waited up to 2 minutes, built for up to 10 minutes.
WITH made AS (
    INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version, status, result, attempt,
                       builder_id, date_created, date_started, date_finished, archive_purpose)
    SELECT das.id, das.processor_id, 'pkg-' || (i::bigint * 7919 % 5000), '1.' || (i % 97),
           CASE WHEN i % 20 = 0 THEN 'FAILEDTOBUILD' WHEN i % 97 = 0 THEN 'MANUALDEPWAIT' WHEN i % 211 = 0 THEN 'CANCELLED'
                ELSE 'FULLYBUILT' END,
           CASE WHEN i % 20 = 0 THEN 'PACKAGEFAIL' WHEN i % 97 = 0 THEN 'DEPFAIL' WHEN i % 211 = 0 THEN 'ABORTED' ELSE 'OK' END,
           1, (SELECT id FROM builder WHERE id = 1 + (das.processor_id - 1) + 4 * (i % 10)),
           now() - interval '30 days' * (1 - i::float8 / $builds),
           now() - interval '30 days' * (1 - i::float8 / $builds) + interval '1 second' * (i % 120),
           now() - interval '30 days' * (1 - i::float8 / $builds) + interval '1 second' * (i % 120 + 30 + i % 570),
           CASE WHEN i % 50 = 0 THEN 'private' ELSE 'primary' END
      FROM generate_series($from, $to) i
      JOIN distroarchseries das ON das.processor_id = 1 + i % 4
     ORDER BY i  -- ids in creation order, as submits give them
    RETURNING id, status, builder_id, date_created, date_started, date_finished
)
INSERT INTO build_event (build_id, at, status, attempt, builder, message)
SELECT id, date_created, 'NEEDSBUILD', 0, NULL, 'submitted with score 2510' FROM made
UNION ALL SELECT id, date_started, 'BUILDING', 1, 'b-' || builder_id, NULL FROM made
UNION ALL SELECT id, date_finished, status, 1, 'b-' || builder_id, NULL FROM made;
SQL
        log "  $to of $builds builds ($((SECONDS - started)) s)"
        from=$((to + 1))
    done
    log "queueing 4,000 waiting builds and a week of per-minute samples"
    "${psql[@]}" >/dev/null <<SQL
WITH made AS (
    INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version)
    SELECT das.id, das.processor_id, 'waiting-' || i, '1.0' FROM generate_series(1, 4000) i
      JOIN distroarchseries das ON das.processor_id = 1 + i % 4
    RETURNING id, processor_id
), queued AS (
    INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore) SELECT id, processor_id, 2510, 2510 FROM made
)
INSERT INTO build_event (build_id, status, attempt, message) SELECT id, 'NEEDSBUILD', 0, 'submitted with score 2510' FROM made;
INSERT INTO farm_sample (at, processor, waiting, oldest_wait_seconds, busy, idle, failed, ended, dispatch_p50, dispatch_p99)
SELECT date_trunc('minute', now()) - interval '1 minute' * m, p.name, (m * 37 + p.id * 11) % 900, (m * 13) % 3600,
       9 - (m % 4), m % 4, 1, jsonb_build_object('FULLYBUILT', 20 + m % 7, 'FAILEDTOBUILD', m % 3, 'MANUALDEPWAIT', m % 2),
       0.4 + (m % 10) / 10.0, 2.0 + (m % 30) / 3.0
  FROM generate_series(0, 7 * 1440 - 1) m, processor p;
ANALYZE;
SQL
    local rows
    rows=$("${psql[@]}" -tA -c "SELECT (SELECT count(*) FROM build) || ' builds, ' || (SELECT count(*) FROM build_event) || ' history lines, ' || (SELECT count(*) FROM farm_sample) || ' samples'")
    log "history made in $((SECONDS - started)) s: $rows"
    "$master_bin" token add bench-viewer --role viewer > "$bench/ui-token" 2>/dev/null || die "token add failed"
    local token; token=$(tail -n 1 "$bench/ui-token")
    start_process bench-ui-master "$bench/ui-master.log" "$master_bin" serve --http-port "$HTTP_PORT" \
        --artifacts "$bench/ui-artifacts" --name bench-ui --sample-interval 5
    until curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null; do sleep 0.2; done
    local middle since until
    middle=$("${psql[@]}" -tA -c "SELECT id FROM build ORDER BY id OFFSET $((builds / 2)) LIMIT 1")
    since=$("${psql[@]}" -tA -c "SELECT to_char((now() - interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')")
    until=$("${psql[@]}" -tA -c "SELECT to_char((now() - interval '2 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')")
    local pages=(
        "/builds"
        "/builds?status=FAILEDTOBUILD"
        "/builds?status=CANCELLED&processor=s390x"
        "/builds?source=pkg-42"
        "/builds?builder=b-7"
        "/builds?builder=b-6"
        "/builds?archive=private"
        "/builds?since=$since&until=$until"
        "/builds?until=$since&status=MANUALDEPWAIT"
        "/builds?cursor=n$middle"
        "/builds/$middle"
        "/builders/b-7"
        "/builders/b-6"
        "/plots?range=24h"
        "/plots?range=7d"
    )
    log "asking for ${#pages[@]} pages $requests times each (as a viewer, who sees private builds too)"
    local out="$bench/ui.txt" page times
    {
        echo "operator pages over $rows ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, release build, $requests requests each)"
        printf '%-58s %8s %8s %8s %9s\n' "page" "p50 ms" "p95 ms" "max ms" "bytes"
        for page in "${pages[@]}"; do
            # One request first, not counted (the statement's first plan).
            curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$HTTP_PORT$page" || die "GET $page failed"
            times=$(for _ in $(seq "$requests"); do
                curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' -H "Authorization: Bearer $token" \
                    "http://127.0.0.1:$HTTP_PORT$page"
            done)
            echo "$times" | sort -n | awk -v page="$page" '
                { t[NR] = $1 * 1000; bytes = $2 }
                END { p50 = t[int((NR + 1) / 2)]; p95 = t[int(NR * 0.95 + 0.999)]; max = t[NR]
                      printf "%-58s %8.1f %8.1f %8.1f %9d%s\n", substr(page, 1, 58), p50, p95, max, bytes, (p95 >= 200 ? "  OVER 200 ms" : "") }'
        done
        grep 'msg="farm sample taken"' "$bench/ui-master.log" | sed -n 's/.*sample.ms=\([0-9.]*\).*/\1/p' | sort -n | awk '
            { t[NR] = $1 } END { if (NR) printf "the sampler on this history: %d samples, p50 %.1f ms, max %.1f ms\n", NR, t[int((NR + 1) / 2)], t[NR] }'
    } | tee "$out"
    log "wrote $out"
    stop_processes
}
