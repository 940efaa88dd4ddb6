# Sourced by deploy/localfarm: the `bench-legacy` command, the legacy adapter at scale.
# One master (release build) follows BUILDERS launchpad-buildd stand-ins served by one Python process,
# polling each every INTERVAL seconds while BUILDS builds of 10 s run through them. Prints
# polls per second against the target, how late polls started (p50/p99/max from the master's own
# figures), the master's and the stand-in's CPU, and how many builds completed (the master runs with
# --lookahead 50, so a builder that comes free finds its next job already queued); writes the table to
# .localfarm/bench/legacy-scale.txt. With MASTERS (the fifth argument, default 1) masters follow the builders
# together, each its rendezvous share (BuilddCore's LegacyShare); the table then says how many each followed.

cmd_bench_legacy() {
    local builders="${1:-1000}" seconds="${2:-60}" builds="${3:-12000}" interval="${4:-1}" masters="${5:-1}" duration=10
    trap down EXIT
    services
    cd "$ROOT"
    log "building buildd-master (release)"
    mkdir -p "$STATE/bench"
    swift build -c release --product buildd-master > "$STATE/bench/release-build.log" 2>&1 \
        || die "the release build failed: see $STATE/bench/release-build.log"
    local master_bin bench="$STATE/bench" standin_port
    master_bin="$(swift build -c release --show-bin-path)/buildd-master"
    # The artifact store must exist before a chroot is stored in it (the CLI refuses a store that is not there).
    mkdir -p "$bench" && rm -rf "$bench/legacy-artifacts" && mkdir -p "$bench/legacy-artifacts"
    fresh_target buildd_bench_legacy buildd-bench-legacy
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_bench_legacy"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-bench-legacy"
    "$master_bin" migrate >/dev/null
    "$master_bin" processor add amd64 >/dev/null
    "$master_bin" archseries add ubuntu/noble/amd64 --processor amd64 >/dev/null
    head -c 4096 /dev/urandom > "$bench/chroot.tar.gz"
    "$master_bin" archseries chroot ubuntu/noble/amd64 "$bench/chroot.tar.gz" --artifacts "$bench/legacy-artifacts" >/dev/null
    standin_port=$((HTTP_PORT + 1))
    start_process bench-standin "$bench/standin.log" python3 "$ROOT/Tests/Support/buildd-standin.py" \
        --port "$standin_port" --duration "$duration"
    until curl -sf "http://127.0.0.1:$standin_port/control/probe" >/dev/null; do sleep 0.2; done
    log "registering $builders legacy builders and queueing $builds builds"
    psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_bench_legacy >/dev/null <<SQL
INSERT INTO builder (name, kind, url)
SELECT 'lp-' || lpad(i::text, 5, '0'), 'xmlrpc', 'http://127.0.0.1:$standin_port/lp-' || lpad(i::text, 5, '0')
  FROM generate_series(1, $builders) i;
INSERT INTO builder_processor (builder_id, processor_id) SELECT b.id, p.id FROM builder b, processor p;
-- The builds as the submit command makes them (score 2510: medium, release, main), in one statement.
WITH made AS (
    INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version)
    SELECT das.id, das.processor_id, 'bench-' || i, '1.0' FROM generate_series(1, $builds) i, distroarchseries das
    RETURNING id, processor_id
), queued AS (
    INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore) SELECT id, processor_id, 2510, 2510 FROM made
)
INSERT INTO build_event (build_id, status, attempt, message) SELECT id, 'NEEDSBUILD', 0, 'submitted with score 2510' FROM made;
SQL
    start_process bench-legacy-master "$bench/legacy-master.log" "$master_bin" serve --http-port "$HTTP_PORT" \
        --artifacts "$bench/legacy-artifacts" --legacy-interval "$interval" --name bench --lookahead 50
    local extra
    for extra in $(seq 2 "$masters"); do
        start_process "bench-legacy-master$extra" "$bench/legacy-master$extra.log" "$master_bin" serve \
            --http-port $((HTTP_PORT + 10 + extra)) --artifacts "$bench/legacy-artifacts" --legacy-interval "$interval" \
            --name "bench$extra" --lookahead 50
    done
    local master_pid standin_pid
    master_pid=$(pgrep -f "buildd-master serve --http-port $HTTP_PORT" | head -n 1)
    standin_pid=$(pgrep -f "buildd-standin.py --port $standin_port" | head -n 1)
    log "measuring for $seconds s (after a 20 s warm-up)"
    sleep 20
    local ticks cpu0 cpu1 scpu0 scpu1 done0 done1
    ticks=$(getconf CLK_TCK)
    cpu0=$(awk '{print $14 + $15}' "/proc/$master_pid/stat"); scpu0=$(awk '{print $14 + $15}' "/proc/$standin_pid/stat")
    done0=$(psql -tA -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_bench_legacy -c "SELECT count(*) FROM build WHERE status = 'FULLYBUILT'")
    local mark; mark=$(wc -l < "$bench/legacy-master.log")
    sleep "$seconds"
    cpu1=$(awk '{print $14 + $15}' "/proc/$master_pid/stat"); scpu1=$(awk '{print $14 + $15}' "/proc/$standin_pid/stat")
    done1=$(psql -tA -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_bench_legacy -c "SELECT count(*) FROM build WHERE status = 'FULLYBUILT'")
    local rss; rss=$(awk '/VmRSS/ {print $2}' "/proc/$master_pid/status")
    tail -n +"$mark" "$bench/legacy-master.log" | grep 'msg="legacy builders polled"' > "$bench/legacy-polls.log" || true
    local out="$bench/legacy-scale.txt"
    {
        echo "legacy adapter at scale: $builders builders, poll interval ${interval} s, builds of ${duration} s ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores)"
        awk -v target="$(awk -v b="$builders" -v i="$interval" 'BEGIN { print b / i }')" '
            { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
              n++; rate += v["polls.per_second"]; if (v["lag.p99_ms"] > p99) p99 = v["lag.p99_ms"]; p50 += v["lag.p50_ms"] }
            END { if (n == 0) { print "no figures logged"; exit }
                  printf "%-34s %10.0f (target %.0f)\n", "polls per second", rate / n, target
                  printf "%-34s %10.0f ms\n", "poll start lag p50 (mean of 10 s)", p50 / n
                  printf "%-34s %10.0f ms\n", "poll start lag p99 (worst 10 s)", p99 }' "$bench/legacy-polls.log"
        awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks" -v s="$seconds" 'BEGIN { printf "%-34s %10.1f %%\n", "master CPU (one core = 100 %)", (b - a) / t / s * 100 }'
        awk -v a="$scpu0" -v b="$scpu1" -v t="$ticks" -v s="$seconds" 'BEGIN { printf "%-34s %10.1f %%\n", "stand-in CPU (Python, all builders)", (b - a) / t / s * 100 }'
        printf "%-34s %10.1f MiB\n" "master RSS" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')"
        printf "%-34s %10.1f per s\n" "builds completed" "$(awk -v a="$done0" -v b="$done1" -v s="$seconds" 'BEGIN { print (b - a) / s }')"
        if [ "$masters" -gt 1 ]; then
            echo "(the CPU, RSS and poll figures above are the first master's)"
            psql -tA -F ' ' -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_bench_legacy -c \
                "SELECT legacy_master, count(*) FROM builder WHERE kind = 'xmlrpc' AND legacy_lease_until > now() GROUP BY 1 ORDER BY 1" |
                awk -v total="$builders" '{ printf "%-34s %10d of %d (%.1f %%)\n", "builders followed by " $1, $2, total, $2 / total * 100 }'
        fi
    } | tee "$out"
    log "figures written to $out"
}
