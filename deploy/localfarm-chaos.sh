# Sourced by deploy/localfarm: the `chaos` command, the fault-injection run.
#
#   deploy/localfarm chaos [BUILDS] [MINUTES]
#
# Durable private services, three masters sharing one artifact store, real agents whose build command
# (deploy/bench/chaos-build) journals what each builder runs and holds the builder's lock while it
# does. BUILDS builds (default 10,000) are queued for two processors; while they run: a master is
# SIGKILLed and restarted every 3-6 s, an agent is SIGKILLed in the middle of a build and restarted
# every 4-8 s, RabbitMQ is restarted 8 s in and then every 60 s, and PostgreSQL is crashed (pg_ctl -m
# immediate) and restarted 18 s in and then every 60 s. When every build has ended (or MINUTES passed) the checker
# (deploy/bench/chaos_check.py) prints builds lost, builds completed twice, builders that ran two builds
# at once and the longest stall, writes them to .localfarm/chaos/report.txt, and fails unless the first
# three are 0. BUILDD_CHAOS_AGENTS sets the number of agents (default 8).

chaos_sql() { PGOPTIONS="-c client_min_messages=warning" psql -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_chaos "$@"; }

chaos_fault() { echo "$(date +%s.%N) $*" >> "$CHAOS/faults.log"; }

chaos_start_master() {  # chaos_start_master N
    local n=$1 port=$((HTTP_PORT + 10 + $1))
    start_process "chaos-master-$n" "$CHAOS/master-$n.log" "$CHAOS_BIN/buildd-master" serve --name "chaos-m$n" \
        --http-port "$port" --public-url "http://127.0.0.1:$port" --artifacts "$CHAOS/artifacts" \
        --lease 5 --accept-timeout 5
    disown "$!" 2>/dev/null || true  # no "Killed" notices from the shell
}

chaos_start_agent() {  # chaos_start_agent NAME
    local name=$1
    ( export CHAOS_DIR=$CHAOS CHAOS_BUILDER=$name
      start_process "chaos-agent-$name" "$CHAOS/agent-$name.log" "$CHAOS_BIN/buildd-agent" run -c "$CHAOS/$name.conf" )
}

chaos_pid() { cat "$STATE/run/$1.pid" 2>/dev/null || true; }

chaos_kill() {  # chaos_kill PROCESS FAULT RESTART...: SIGKILL it, log the fault, restart it a moment later
    local process=$1 fault=$2
    shift 2
    kill -KILL "$(chaos_pid "$process")" 2>/dev/null || true
    chaos_fault "$fault"
    sleep "0.$((RANDOM % 9 + 1))"
    "$@"
}

cmd_chaos() {
    local builds=${1:-10000} minutes=${2:-60} agents=${BUILDD_CHAOS_AGENTS:-8}
    trap down EXIT
    services
    cd "$ROOT"
    log "building buildd-master and buildd-agent"
    swift build --product buildd-master 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    swift build --product buildd-agent 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    CHAOS_BIN=$(swift build --show-bin-path)
    CHAOS=$STATE/chaos
    rm -rf "$CHAOS" && mkdir -p "$CHAOS/locks" "$CHAOS/artifacts" "$CHAOS/work"
    : > "$CHAOS/journal"
    : > "$CHAOS/faults.log"
    fresh_target buildd_chaos buildd-chaos
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_chaos"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-chaos"
    local master="$CHAOS_BIN/buildd-master"
    "$master" migrate >/dev/null
    local urls="" n
    for n in 1 2 3; do urls="$urls${urls:+,}http://127.0.0.1:$((HTTP_PORT + 10 + n))"; done
    echo guest > "$CHAOS/secret"
    local names=() processor name i
    for processor in amd64 arm64; do
        "$master" processor add "$processor" >/dev/null
        "$master" archseries add "ubuntu/noble/$processor" --processor "$processor" >/dev/null
    done
    for i in $(seq "$agents"); do
        processor=amd64; [ $((i % 2)) = 0 ] && processor=arm64
        name=$(printf 'chaos-%s-%02d' "$processor" "$i")
        names+=("$name")
        "$master" builder add "$name" --processor "$processor" --no-sender-check >/dev/null
        cat > "$CHAOS/$name.conf" <<CONF
[agent]
name = $name
processors = $processor
workdir = $CHAOS/work/$name
heartbeat = 1
[broker]
url = amqp://guest@127.0.0.1:$AMQP_PORT/buildd-chaos
password_file = $CHAOS/secret
[master]
url = $urls
[commands]
binarypackage = $ROOT/deploy/bench/chaos-build
CONF
    done
    for n in 1 2 3; do chaos_start_master "$n"; done
    for name in "${names[@]}"; do chaos_start_agent "$name"; done
    log "queueing $builds builds for amd64 and arm64"
    chaos_sql <<SQL >/dev/null
WITH b AS (
    INSERT INTO build (distroarchseries_id, processor_id, source_name, source_version)
    SELECT das.id, das.processor_id, 'chaos', '1.0-' || g
      FROM generate_series(1, $builds) g
      JOIN distroarchseries das ON das.architecturetag = CASE WHEN g % 2 = 0 THEN 'arm64' ELSE 'amd64' END
    RETURNING id, processor_id),
q AS (
    INSERT INTO buildqueue (build_id, processor_id, lastscore, basescore)
    SELECT id, processor_id, s, s FROM (SELECT id, processor_id, (random() * 3000)::int AS s FROM b) x)
INSERT INTO build_event (build_id, status, attempt, message) SELECT id, 'NEEDSBUILD', 0, 'submitted' FROM b;
SQL
    local start now deadline next_master next_agent next_broker next_pg done=0 last_report=0
    local kills_master=0 kills_agent=0 restarts_broker=0 restarts_pg=0
    start=$(date +%s)
    deadline=$((start + minutes * 60))
    next_master=$((start + 3)); next_agent=$((start + 4)); next_broker=$((start + 8)); next_pg=$((start + 18))
    chaos_fault "start $builds builds"
    log "faults begin: masters SIGKILLed every 3-6 s, agents mid-build every 4-8 s, broker and database restarts"
    while true; do
        now=$(date +%s)
        done=$(chaos_sql -c "SELECT count(*) FROM build WHERE source_name = 'chaos' AND status IN ('FULLYBUILT', 'FAILEDTOBUILD')" 2>/dev/null || echo "$done")
        [ "$done" -ge "$builds" ] && break
        if [ "$now" -ge "$deadline" ]; then log "time is up with $done of $builds builds ended"; break; fi
        if [ "$now" -ge "$next_master" ]; then
            n=$((RANDOM % 3 + 1))
            chaos_kill "chaos-master-$n" "kill master chaos-m$n" chaos_start_master "$n"
            kills_master=$((kills_master + 1))
            next_master=$((now + 3 + RANDOM % 4))
        fi
        if [ "$now" -ge "$next_agent" ]; then
            # An agent whose build command is running right now.
            local pid victim=""
            for pid in $(pgrep -f "deploy/bench/chaos-build" || true); do
                # (the build may end meanwhile and its /proc entry with it)
                victim=$(tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" | sed -n 's/^CHAOS_BUILDER=//p') || victim=""
                [ -n "$victim" ] && break
            done
            if [ -n "$victim" ]; then
                chaos_kill "chaos-agent-$victim" "kill agent $victim mid-build" chaos_start_agent "$victim"
                kills_agent=$((kills_agent + 1))
            fi
            next_agent=$((now + 4 + RANDOM % 5))
        fi
        if [ "$now" -ge "$next_broker" ]; then
            chaos_fault "restart broker"
            log "restarting RabbitMQ"
            stop_rabbitmq
            RABBIT_TLS=1 start_rabbitmq
            restarts_broker=$((restarts_broker + 1))
            chaos_fault "broker back"
            next_broker=$(( $(date +%s) + 60 ))
        fi
        if [ "$now" -ge "$next_pg" ]; then
            chaos_fault "crash database"
            log "crashing and restarting PostgreSQL"
            as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 60 restart \
                -l "$PG_DIR/postgres.log" >/dev/null
            restarts_pg=$((restarts_pg + 1))
            chaos_fault "database back"
            next_pg=$(( $(date +%s) + 60 ))
        fi
        if [ $((now - last_report)) -ge 10 ]; then
            log "chaos: $done of $builds builds ended after $((now - start)) s; killed $kills_master masters," \
                "$kills_agent agents; restarted the broker $restarts_broker and the database $restarts_pg times"
            last_report=$now
        fi
        sleep 0.5
    done
    chaos_fault "end"
    log "faults over after $(( $(date +%s) - start )) s; stopping the farm and checking"
    stop_processes
    python3 "$ROOT/deploy/bench/chaos_check.py" --dir "$CHAOS" --builds "$builds" \
        --database "postgresql://postgres@127.0.0.1:$PG_PORT/buildd_chaos" | tee "$CHAOS/report.txt"
    return "${PIPESTATUS[0]}"
}
