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

# chaos_bin PROCESS: the binaries PROCESS runs: the checkout's, or in a mixed run (`deploy/localfarm mixed`)
# the previous release's until PROCESS was upgraded.
chaos_bin() {
    if [ -n "${CHAOS_BIN_OLD:-}" ] && [ ! -e "$CHAOS/upgraded/$1" ]; then echo "$CHAOS_BIN_OLD"; else echo "$CHAOS_BIN"; fi
}

chaos_start_master() {  # chaos_start_master N
    local n=$1 port=$((HTTP_PORT + 10 + $1))
    start_process "chaos-master-$n" "$CHAOS/master-$n.log" "$(chaos_bin "chaos-master-$n")/buildd-master" serve --name "chaos-m$n" \
        --http-port "$port" --public-url "http://127.0.0.1:$port" --artifacts "$CHAOS/artifacts" \
        --lease 5 --accept-timeout 5
    disown "$!" 2>/dev/null || true  # no "Killed" notices from the shell
}

chaos_start_agent() {  # chaos_start_agent NAME
    local name=$1
    ( export CHAOS_DIR=$CHAOS CHAOS_BUILDER=$name
      start_process "chaos-agent-$name" "$CHAOS/agent-$name.log" "$(chaos_bin "chaos-agent-$name")/buildd-agent" run -c "$CHAOS/$name.conf" )
}

chaos_pid() { cat "$STATE/run/$1.pid" 2>/dev/null || true; }

chaos_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

chaos_gone() {  # chaos_gone PID: waits up to 5 s for PID to disappear
    local tries=0
    while chaos_alive "$1"; do
        tries=$((tries + 1))
        [ $tries -lt 50 ] || return 1
        sleep 0.1
    done
}

# chaos_kill PROCESS FAULT RESTART...: SIGKILL it, log the fault with its checked effect (the pid is gone),
# restart it a moment later. A process that was not running is logged as skipped, not as a fault.
chaos_kill() {
    local process=$1 fault=$2 pid
    shift 2
    pid=$(chaos_pid "$process")
    if ! chaos_alive "$pid"; then
        chaos_fault "skipped $fault: not running"
    else
        kill -KILL "$pid" 2>/dev/null || true
        if chaos_gone "$pid"; then chaos_fault "$fault (pid $pid gone)"; else chaos_fault "FAILED $fault: pid $pid still alive"; fi
    fi
    sleep "0.$((RANDOM % 9 + 1))"
    "$@"
}

rabbit_pid() { cat "$STATE/rabbit/rabbit.pid" 2>/dev/null || true; }
postgres_pid() { head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null || true; }

# chaos_restart_broker: stops RabbitMQ and starts it again, logging the outage and each checked effect (the
# old pid gone; a new one that answers). Returns 0 when the broker is back.
chaos_restart_broker() {
    local before after
    before=$(rabbit_pid)
    log "restarting RabbitMQ"
    chaos_fault "broker stopping (pid $before)"  # when the outage begins; the effect is logged below
    stop_rabbitmq
    if ! chaos_gone "$before"; then
        chaos_fault "FAILED restart broker: pid $before still alive after the stop"
        return 1
    fi
    chaos_fault "restart broker (pid $before gone)"
    RABBIT_TLS=1 start_rabbitmq
    after=$(rabbit_pid)
    if [ -n "$after" ] && [ "$after" != "$before" ] && rabbitmqctl_ status >/dev/null 2>&1; then
        chaos_fault "broker back (pid $after, answering)"
        return 0
    fi
    chaos_fault "FAILED broker back: pid '$after' (was $before) or not answering"
    return 1
}

# chaos_crash_database SQL_FUNCTION: crashes PostgreSQL (an immediate stop: no checkpoint, what a crash leaves)
# and starts it with the same options, logging each checked effect; SQL_FUNCTION (the run's psql wrapper) must
# answer afterwards. Returns 0 when the database is back.
chaos_crash_database() {
    local sql=$1 before after
    before=$(postgres_pid)
    log "crashing and restarting PostgreSQL"
    chaos_fault "database crashing (postmaster $before)"
    as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 60 restart \
        -l "$PG_DIR/postgres.log" >/dev/null 2>&1 || true
    after=$(postgres_pid)
    if ! chaos_gone "$before"; then
        chaos_fault "FAILED crash database: postmaster $before still alive"
        return 1
    fi
    chaos_fault "crash database (postmaster $before gone)"
    if [ -n "$after" ] && [ "$after" != "$before" ] && [ "$("$sql" -c 'SELECT 1' 2>/dev/null)" = 1 ]; then
        chaos_fault "database back (postmaster $after, answering)"
        return 0
    fi
    chaos_fault "FAILED database back: postmaster '$after' (was $before) or not answering"
    return 1
}

# "Two at once", sampled from the database while the faults run (not after everything stopped): builders
# with more than one build BUILDING or CANCELLING, and with more than one running queue entry. (The SQL is
# shared with the cluster run.)
chaos_overlap_sql() {
    cat <<'SQL'
SELECT (SELECT count(*) FROM (SELECT builder_id FROM build
                             WHERE status IN ('BUILDING', 'CANCELLING') AND builder_id IS NOT NULL
                             GROUP BY 1 HAVING count(*) > 1) b)
     + (SELECT count(*) FROM (SELECT builder_id FROM buildqueue
                             WHERE state IN ('RUNNING', 'CANCELLING') GROUP BY 1 HAVING count(*) > 1) q)
SQL
}

chaos_sample() {
    local count
    count=$(chaos_sql -c "$(chaos_overlap_sql)" 2>/dev/null) || return 0  # the database may be down right now
    echo "$(date +%s.%N) $count" >> "$CHAOS/samples"
}

# The SQL that queues BUILDS builds of source "chaos" over amd64 and arm64, with random scores (shared with
# the cluster run).
chaos_queue_sql() {
    local builds=$1
    cat <<SQL
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
}

# chaos_upgrade PROCESS: a package upgrade of one machine, as its postinst does it: the new binaries replace
# the old and the daemon restarts (SIGTERM: an agent gives its running build back). The first master to be
# upgraded first runs the new release's `migrate` (its unit's ExecStartPre), while the old masters serve on.
chaos_upgrade() {
    local process=$1 pid
    if [[ $process == chaos-master-* ]] && [ ! -e "$CHAOS/upgraded/migrated" ]; then
        if "$CHAOS_BIN/buildd-master" migrate >> "$CHAOS/upgrades.log" 2>&1; then
            chaos_fault "upgrade: migrate to the new schema with the old masters running"
            touch "$CHAOS/upgraded/migrated"
        else
            chaos_fault "FAILED upgrade: the new release's migrate failed"
        fi
        # An old master that starts now meets the new schema: it must serve it.
        local old=3 port tries=0
        [ "$process" != chaos-master-3 ] || old=2
        pid=$(chaos_pid "chaos-master-$old")
        if chaos_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; chaos_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true; fi
        chaos_start_master "$old"
        port=$((HTTP_PORT + 10 + old))
        until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
            tries=$((tries + 1))
            [ $tries -lt 100 ] || break
            sleep 0.2
        done
        if [ $tries -lt 100 ] && grep -q '"serving a newer schema"\|serving a newer schema' "$CHAOS/master-$old.log"; then
            chaos_fault "upgrade: an old master restarted on the new schema serves it (chaos-m$old)"
        else
            chaos_fault "FAILED upgrade: an old master restarted on the new schema did not serve it (chaos-m$old)"
        fi
    fi
    pid=$(chaos_pid "$process")
    if chaos_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; chaos_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true; fi
    touch "$CHAOS/upgraded/$process"
    case "$process" in
        chaos-master-*) chaos_start_master "${process#chaos-master-}" ;;
        chaos-agent-*) chaos_start_agent "${process#chaos-agent-}" ;;
    esac
    chaos_fault "upgrade $process to $("$CHAOS_BIN/buildd-master" --version)"
    log "mixed run: upgraded $process"
}

cmd_chaos() {
    local builds=${1:-10000} minutes=${2:-60} agents=${BUILDD_CHAOS_AGENTS:-8}
    trap down EXIT
    services
    cd "$ROOT"
    build_farm_binaries
    CHAOS_BIN=$FARM_BIN
    CHAOS=${CHAOS:-$STATE/chaos}
    rm -rf "$CHAOS" && mkdir -p "$CHAOS/locks" "$CHAOS/artifacts" "$CHAOS/work" "$CHAOS/upgraded"
    : > "$CHAOS/journal"
    # The build command runs as the build user (nobody): it journals and takes its builder's lock here.
    chmod 0777 "$CHAOS/locks" && chmod 0666 "$CHAOS/journal"
    : > "$CHAOS/faults.log"
    : > "$CHAOS/samples"
    fresh_target buildd_chaos buildd-chaos
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_chaos"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-chaos"
    # The farm is made by the binaries its masters start with (a mixed run's: the previous release's).
    local master
    master="$(chaos_bin setup)/buildd-master"
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
build_user = nobody  # as root, builds run as nobody (never as root or as the agent)
heartbeat = 1
[broker]
url = amqp://guest@127.0.0.1:$AMQP_PORT/buildd-chaos
password_file = $CHAOS/secret
[master]
url = $urls
insecure_http = true  # loopback only: masters and agents on this machine
[commands]
binarypackage = $ROOT/deploy/bench/chaos-build
CONF
    done
    for n in 1 2 3; do chaos_start_master "$n"; done
    for name in "${names[@]}"; do chaos_start_agent "$name"; done
    log "queueing $builds builds for amd64 and arm64"
    chaos_queue_sql "$builds" | chaos_sql >/dev/null
    local start now deadline next_master next_agent next_broker next_pg done=0 last_report=0
    local kills_master=0 kills_agent=0 restarts_broker=0 restarts_pg=0
    start=$(date +%s)
    deadline=$((start + minutes * 60))
    next_master=$((start + 3)); next_agent=$((start + 4)); next_broker=$((start + 8)); next_pg=$((start + 18))
    chaos_fault "start $builds builds"
    local upgrades=() next_upgrade=$((start + 1000000000)) upgraded=0
    if [ -n "${CHAOS_BIN_OLD:-}" ]; then
        # One machine at a time, masters and agents in turn, as docs/deploy.md's section 8 says.
        for i in $(seq 0 $(( ${#names[@]} > 3 ? ${#names[@]} - 1 : 2 ))); do
            [ "$i" -lt 3 ] && upgrades+=("chaos-master-$((i + 1))")
            [ "$i" -lt "${#names[@]}" ] && upgrades+=("chaos-agent-${names[$i]}")
        done
        next_upgrade=$((start + ${CHAOS_UPGRADE_EVERY:-4}))
        log "mixed run: ${#upgrades[@]} machines start on $("$CHAOS_BIN_OLD/buildd-master" --version) and are upgraded to $("$CHAOS_BIN/buildd-master" --version), one every ${CHAOS_UPGRADE_EVERY:-4} s"
    fi
    log "faults begin: masters SIGKILLed every 3-6 s, agents mid-build every 4-8 s, broker and database restarts"
    while true; do
        now=$(date +%s)
        done=$(chaos_sql -c "SELECT count(*) FROM build WHERE source_name = 'chaos' AND status IN ('FULLYBUILT', 'FAILEDTOBUILD')" 2>/dev/null || echo "$done")
        [ "$done" -ge "$builds" ] && [ "$upgraded" -ge "${#upgrades[@]}" ] && break
        if [ "$now" -ge "$next_upgrade" ] && [ "$upgraded" -lt "${#upgrades[@]}" ]; then
            chaos_upgrade "${upgrades[$upgraded]}"
            upgraded=$((upgraded + 1))
            next_upgrade=$((now + ${CHAOS_UPGRADE_EVERY:-4}))
        fi
        if [ "$now" -ge "$deadline" ]; then log "time is up with $done of $builds builds ended"; break; fi
        if [ "$now" -ge "$next_master" ]; then
            n=$((RANDOM % 3 + 1))
            chaos_kill "chaos-master-$n" "kill master chaos-m$n" chaos_start_master "$n"
            kills_master=$((kills_master + 1))  # attempts; the checker counts the confirmed ones
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
            if chaos_restart_broker; then restarts_broker=$((restarts_broker + 1)); fi
            next_broker=$(( $(date +%s) + 60 ))
        fi
        if [ "$now" -ge "$next_pg" ]; then
            if chaos_crash_database chaos_sql; then restarts_pg=$((restarts_pg + 1)); fi
            next_pg=$(( $(date +%s) + 60 ))
        fi
        chaos_sample
        if [ $((now - last_report)) -ge 10 ]; then
            log "chaos: $done of $builds builds ended after $((now - start)) s; killed $kills_master masters," \
                "$kills_agent agents; restarted the broker $restarts_broker and the database $restarts_pg times"
            last_report=$now
        fi
        sleep 0.5
    done
    chaos_fault "end"
    if [ -n "${CHAOS_BIN_OLD:-}" ]; then
        chaos_sql -c "SELECT coalesce(agent_release, 'none') || ' ' || count(*) FROM builder GROUP BY agent_release ORDER BY 1" \
            | sed 's/^/mixed run: agents that said hello last with release /' | tee -a "$CHAOS/upgrades.log" >&2
        [ "$upgraded" -ge "${#upgrades[@]}" ] || { log "error: only $upgraded of ${#upgrades[@]} machines were upgraded in time"; stop_processes; return 1; }
    fi
    log "faults over after $(( $(date +%s) - start )) s; stopping the farm and checking"
    stop_processes
    python3 "$ROOT/deploy/bench/chaos_check.py" --dir "$CHAOS" --builds "$builds" \
        --max-failed-share "${BUILDD_CHAOS_MAX_FAILED_SHARE:-0.05}" \
        --database "postgresql://postgres@127.0.0.1:$PG_PORT/buildd_chaos" | tee "$CHAOS/report.txt"
    return "${PIPESTATUS[0]}"
}
