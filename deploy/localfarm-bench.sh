# Sourced by deploy/localfarm: the `bench-agent` command, the agent's footprint benchmark.
# Prints the agent's idle RSS and CPU over a quiet interval and its peak RSS while it runs a build,
# for a release build of buildd-agent with the Swift standard library linked statically (as deployed: only
# the pages it uses are resident), and writes the table to .localfarm/bench/agent-footprint.txt.

cmd_bench_agent() {
    trap down EXIT
    services
    cd "$ROOT"
    log "building buildd-agent (release, static Swift stdlib) and buildd-master (debug)"
    swift build -c release --product buildd-agent --static-swift-stdlib --scratch-path .build-static 2>&1 \
        | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    swift build --product buildd-master 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    local agent_bin master_bin bench="$STATE/bench"
    agent_bin="$(swift build -c release --scratch-path .build-static --show-bin-path)/buildd-agent"
    master_bin="$(swift build --show-bin-path)/buildd-master"
    rm -rf "$bench/work" && mkdir -p "$bench"
    fresh_target buildd_bench buildd-bench
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_bench"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-bench"
    "$master_bin" migrate >/dev/null
    "$master_bin" processor add amd64 >/dev/null
    "$master_bin" archseries add ubuntu/noble/amd64 --processor amd64 >/dev/null
    "$master_bin" builder add bench-1 --processor amd64 --no-sender-check >/dev/null
    # HTTPS, as a deployed farm: the master with the local CA's certificate for localhost, the agent checking it.
    make_tls
    start_process bench-master "$bench/master.log" "$master_bin" serve --http-port "$HTTP_PORT" --artifacts "$bench/artifacts" \
        --tls-certificate "$STATE/tls/server.pem" --tls-key "$STATE/tls/server.key"
    until curl -sf --cacert "$STATE/tls/ca.pem" "https://localhost:$HTTP_PORT/healthz" >/dev/null; do sleep 0.2; done
    echo guest > "$bench/secret"
    cat > "$bench/agent.conf" <<CONF
[agent]
name = bench-1
processors = amd64
workdir = $bench/work
build_user = nobody  # as root, builds run as nobody (never as root or as the agent)
heartbeat = 5
[broker]
url = amqps://guest@localhost:$AMQPS_PORT/buildd-bench?cacert=$STATE/tls/ca.pem
password_file = $bench/secret
[master]
url = https://localhost:$HTTP_PORT
ca_file = $STATE/tls/ca.pem
[commands]
binarypackage = $ROOT/deploy/examples/sample-build
CONF
    BUILDD_SAMPLE_SECONDS=8 start_process bench-agent "$bench/agent.log" "$agent_bin" run -c "$bench/agent.conf"
    local pid
    pid=$(cat "$STATE/run/bench-agent.pid")
    sleep 5
    local ticks idle_seconds=30 rss_idle cpu0 cpu1
    ticks=$(getconf CLK_TCK)
    log "measuring the idle agent for ${idle_seconds} s (pid $pid)"
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep "$idle_seconds"
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    rss_idle=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    local cpu_idle
    cpu_idle=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks" -v s="$idle_seconds" 'BEGIN { printf "%.3f", (b - a) * 100 / t / s }')
    log "running an 8 s build and sampling the agent's memory"
    local id peak=0 rss status
    id=$("$master_bin" build submit ubuntu/noble/amd64 hello 2.10-3)
    for _ in $(seq 60); do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
        [ "$rss" -gt "$peak" ] && peak=$rss
        status=$("$master_bin" build show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build"]["status"])')
        [ "$status" = FULLYBUILT ] && break
        sleep 0.25
    done
    stop_processes
    {
        echo "buildd-agent footprint ($(uname -m), $(nproc) cores, release build, static Swift stdlib, $(date -u +%Y-%m-%d))"
        echo "| what | figure |"
        echo "|---|---|"
        echo "| idle RSS | $((rss_idle / 1024)).$(((rss_idle % 1024) * 10 / 1024)) MiB ($rss_idle KiB) |"
        echo "| idle CPU over ${idle_seconds} s (heartbeat every 5 s) | ${cpu_idle} % of one core |"
        echo "| peak RSS while running and uploading a build | $((peak / 1024)).$(((peak % 1024) * 10 / 1024)) MiB ($peak KiB) |"
        echo "| the build | $status |"
    } | tee "$bench/agent-footprint.txt"
    [ "$status" = FULLYBUILT ]
}
