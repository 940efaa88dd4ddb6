# Sourced by deploy/localfarm: the `bench` command, every benchmark of the README's Performance section.
#
#   deploy/localfarm bench [quick]
#
# Durable private services (fsync on), release builds, then in one run on the same broker and database:
# the floors (one durable commit, one confirmed publish), buildd's dispatch latency, throughput through one
# and two masters, turnaround with 1,000 / 100,000 / 1,000,000 waiting builds, Celery 5 on the same
# broker, a master with 10,000 idle builders and an idle agent's memory. Prints the table and writes it,
# with the raw JSON lines, to .localfarm/bench/. `quick` runs smaller sizes; `depth` runs
# only the queue-depth part again (on a fresh database) and redraws the table; `throughput [OPTIONS...]`
# runs only one master's throughput, the master started with these `serve` options (for tuning).

bench_json() {  # bench_json ARGS... : runs buildd-bench, keeps its JSON line
    "$BENCH_BIN/buildd-bench" "$@" | tee -a "$BENCH/results.jsonl"
}

bench_master() {  # bench_master N [serve options...]
    local n=$1 port=$((HTTP_PORT + 20 + $1))
    shift
    start_process "bench-master-$n" "$BENCH/master-$n.log" "$BENCH_BIN/buildd-master" serve --name "bench-m$n" \
        --http-port "$port" --artifacts "$BENCH/artifacts" "$@"
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.2; done
}

bench_stop() {  # bench_stop NAME
    local pid
    pid=$(cat "$STATE/run/$1.pid" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$STATE/run/$1.pid"
}

bench_depth() {  # bench_depth WAITING... : turnaround with that many waiting builds
    log "queue depth: turnaround with $* waiting builds (master with --lookahead 0)"
    bench_stop bench-master-1
    local depth
    for depth in "$@"; do
        # Jobs published for earlier runs' builders would stand in the queue ahead of the best builds.
        mgmt DELETE /queues/buildd-bench/buildd.jobs.benchcpu/contents || true
        bench_master 1 --lookahead 0
        bench_json depth --waiting "$depth"
        bench_stop bench-master-1
    done
}

bench_setup() {  # services up, release builds of buildd-master and buildd-bench, a fresh migrated bench database and vhost
    trap down EXIT
    services
    cd "$ROOT"
    swift build -c release --product buildd-master 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    swift build -c release --product buildd-bench 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    BENCH_BIN=$(swift build -c release --show-bin-path)
    BENCH=$STATE/bench
    mkdir -p "$BENCH"
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_bench"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-bench"
    fresh_target buildd_bench buildd-bench
    "$BENCH_BIN/buildd-master" migrate >/dev/null
}

cmd_bench() {
    local quick=${1:-}
    local samples=500 builds=20000 tasks=20000 fleet=10000 fleet_seconds=60 depths="1000 100000 1000000"
    if [ "$quick" = depth ]; then  # only the queue-depth runs, on a fresh database
        bench_setup
        grep -v '"bench":"depth"' "$BENCH/results.jsonl" > "$BENCH/results.tmp" || true
        mv "$BENCH/results.tmp" "$BENCH/results.jsonl"
        bench_depth $depths
        python3 "$ROOT/deploy/bench/bench_table.py" "$BENCH/results.jsonl" | tee "$BENCH/results.md"
        return
    fi
    if [ "$quick" = throughput ]; then  # only one master's throughput, with these serve options (tuning)
        shift
        bench_setup
        rm -rf "$BENCH/artifacts"
        bench_master 1 "$@"
        log "throughput, one master ($*): ${BUILDD_BENCH_BUILDS:-5000} no-op builds, 200 simulated agents"
        "$BENCH_BIN/buildd-bench" throughput --builds "${BUILDD_BENCH_BUILDS:-5000}" --agents 200 --label throughput-1
        return
    fi
    if [ "$quick" = quick ]; then
        samples=200; builds=5000; tasks=5000; fleet=2000; fleet_seconds=20; depths="1000 100000"
    fi
    log "building buildd-master and buildd-bench (release) and buildd-agent (release, static Swift stdlib)"
    bench_setup
    swift build -c release --product buildd-agent --static-swift-stdlib --scratch-path .build-static 2>&1 \
        | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    local agent_bin
    agent_bin="$(swift build -c release --scratch-path .build-static --show-bin-path)/buildd-agent"
    rm -rf "$BENCH/artifacts" "$BENCH/agent-work"
    : > "$BENCH/results.jsonl"
    fresh_target "" celery-bench

    log "floors: durable commits and confirmed publishes"
    bench_json postgres-floor
    bench_json broker-floor

    bench_master 1
    log "dispatch latency: $samples builds, one at a time, 4 idle agents"
    bench_json dispatch --samples "$samples"
    log "throughput, one master: $builds no-op builds, 200 simulated agents"
    bench_json throughput --builds "$builds" --agents 200 --label throughput-1
    bench_master 2
    log "throughput, two masters: $builds no-op builds, 200 simulated agents"
    bench_json throughput --builds "$builds" --agents 200 --label throughput-2
    bench_stop bench-master-2

    log "Celery $(cat "$ROOT/deploy/bench/celery-version") on the same broker (PyPI, in $STATE/venv-celery)"
    if ! "$STATE/venv-celery/bin/python" -c "import celery, sqlalchemy, psycopg2" 2>/dev/null; then
        [ -x "$STATE/venv-celery/bin/pip" ] || python3 -m venv "$STATE/venv-celery"
        # SQLAlchemy and psycopg2 for the result backend of the durable drain.
        "$STATE/venv-celery/bin/pip" install -q "celery==$(cat "$ROOT/deploy/bench/celery-version")" sqlalchemy psycopg2-binary
    fi
    fresh_target celery_results celery-bench  # the durable drain's result backend
    "$STATE/venv-celery/bin/python" "$ROOT/deploy/bench/celery_bench.py" --samples "$samples" --tasks "$tasks" \
        --broker "amqp://guest:guest@127.0.0.1:$AMQP_PORT/celery-bench" \
        --backend "postgresql://postgres@127.0.0.1:$PG_PORT/celery_results" | tee -a "$BENCH/results.jsonl"

    log "memory: one master with $fleet idle builders heartbeating every 10 s"
    local pid rss0
    pid=$(cat "$STATE/run/bench-master-1.pid")
    rss0=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    echo "{\"bench\":\"master-before-fleet\",\"rss_mib\":$((rss0 / 1024))}" >> "$BENCH/results.jsonl"
    bench_json fleet --builders "$fleet" --seconds "$fleet_seconds" --master-pid "$pid"

    bench_depth $depths

    log "memory: an idle agent (release, static Swift stdlib)"
    "$BENCH_BIN/buildd-master" processor add idlecpu >/dev/null
    "$BENCH_BIN/buildd-master" builder add rss-agent --processor idlecpu --no-sender-check >/dev/null
    echo guest > "$BENCH/secret"
    cat > "$BENCH/rss-agent.conf" <<CONF
[agent]
name = rss-agent
processors = idlecpu
workdir = $BENCH/agent-work
build_user = nobody  # as root, builds run as nobody (never as root or as the agent)
heartbeat = 5
[broker]
url = amqp://guest@127.0.0.1:$AMQP_PORT/buildd-bench
password_file = $BENCH/secret
[master]
url = http://127.0.0.1:$((HTTP_PORT + 21))
insecure_http = true  # loopback only: masters and agents on this machine
[commands]
binarypackage = $ROOT/deploy/examples/sample-build
CONF
    start_process bench-agent "$BENCH/agent.log" "$agent_bin" run -c "$BENCH/rss-agent.conf"
    sleep 15
    pid=$(cat "$STATE/run/bench-agent.pid")
    echo "{\"bench\":\"agent\",\"rss_mib\":$(awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status")}" \
        | tee -a "$BENCH/results.jsonl"
    stop_processes

    python3 "$ROOT/deploy/bench/bench_table.py" "$BENCH/results.jsonl" | tee "$BENCH/results.md"
    log "table written to $BENCH/results.md (raw figures: $BENCH/results.jsonl)"
}
