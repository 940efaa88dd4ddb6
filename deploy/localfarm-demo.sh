# Sourced by deploy/localfarm: the `demo` command. Uses the helpers defined there.

DEMO_SAMPLES=(
    # archseries source version options... expected-status
    "ubuntu/noble/amd64 hello 2.10-3 --urgency high|FULLYBUILT"
    "ubuntu/noble/amd64 coreutils 9.4-3ubuntu6|FULLYBUILT"
    "ubuntu/noble/amd64 bash 5.2.21-2ubuntu4 --pocket security|FULLYBUILT"
    "ubuntu/noble/amd64 hello-broken 1.0-1 --component universe|FAILEDTOBUILD"
    "ubuntu/noble/amd64 libfoo-depwait 0.1-1|MANUALDEPWAIT"
    "ubuntu/noble/arm64 hello 2.10-3|FULLYBUILT"
    "ubuntu/noble/arm64 zlib 1:1.3.dfsg-3.1ubuntu2|FULLYBUILT"
    "ubuntu/noble/arm64 coreutils 9.4-3ubuntu6 --urgency low|FULLYBUILT"
)
DEMO_AGENTS=("demo-amd64-1 amd64" "demo-amd64-2 amd64" "demo-arm64-1 arm64")

cmd_demo() {
    trap down EXIT
    services
    cd "$ROOT"
    log "building buildd (debug build; the first one takes a few minutes)"
    swift build 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' || true
    local bin
    bin=$(swift build --show-bin-path)
    local master="$bin/buildd-master" demo="$STATE/demo"
    rm -rf "$demo"
    mkdir -p "$demo"
    chmod 700 "$demo"

    # A fresh database and vhost for the demo.
    PGOPTIONS="-c client_min_messages=warning" psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "DROP DATABASE IF EXISTS buildd_demo" \
        -c "CREATE DATABASE buildd_demo" >/dev/null
    mgmt DELETE /vhosts/buildd-demo || true
    mgmt PUT /vhosts/buildd-demo
    local master_password
    master_password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
    mgmt PUT /users/buildd-master "{\"password\":\"$master_password\",\"tags\":\"\"}"
    mgmt PUT /permissions/buildd-demo/buildd-master '{"configure":".*","write":".*","read":".*"}'
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_demo"
    export BUILDD_BROKER_URL="amqp://buildd-master:$master_password@127.0.0.1:$AMQP_PORT/buildd-demo"

    "$master" migrate
    "$master" processor add amd64
    "$master" processor add arm64
    "$master" archseries add ubuntu/noble/amd64 --processor amd64
    "$master" archseries add ubuntu/noble/arm64 --processor arm64

    log "starting the master (HTTP on 127.0.0.1:$HTTP_PORT, log $demo/master.log)"
    start_process master "$demo/master.log" "$master" serve --http-port "$HTTP_PORT" --artifacts "$demo/artifacts" \
        --name demo-master
    until curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null; do
        kill -0 "$(cat "$STATE/run/master.pid")" 2>/dev/null || { tail "$demo/master.log" >&2; die "master died"; }
        sleep 0.2
    done

    local entry name processor password
    for entry in "${DEMO_AGENTS[@]}"; do
        read -r name processor <<<"$entry"
        # Each agent has its own broker user; topic permissions let it publish only <its name>.* events.
        password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
        mgmt PUT "/users/$name" "{\"password\":\"$password\",\"tags\":\"\"}"
        mgmt PUT "/permissions/buildd-demo/$name" "{\"configure\":\"^buildd\\\\.(jobs\\\\.$processor|control\\\\.$name)\$\",\"write\":\"^buildd\\\\.(status|jobs\\\\.$processor|control\\\\.$name)\$\",\"read\":\"^buildd\\\\.(jobs|control|jobs\\\\.$processor|control\\\\.$name)\$\"}"
        mgmt PUT "/topic-permissions/buildd-demo/$name" "{\"exchange\":\"buildd.status\",\"write\":\"^$name\\\\.\",\"read\":\"^\$\"}"
        umask 077
        echo "$password" > "$demo/$name.secret"
        cat > "$demo/$name.conf" <<CONF
[agent]
name = $name
processors = $processor
workdir = $demo/work-$name
heartbeat = 2

[broker]
url = amqp://$name@127.0.0.1:$AMQP_PORT/buildd-demo
password_file = $demo/$name.secret

[master]
url = http://127.0.0.1:$HTTP_PORT

[commands]
binarypackage = $ROOT/deploy/examples/sample-build
CONF
        umask 022
        "$master" builder add "$name" --processor "$processor" --broker-user "$name"
        BUILDD_SAMPLE_SECONDS=2 start_process "agent-$name" "$demo/$name.log" "$bin/buildd-agent" run -c "$demo/$name.conf"
    done

    log "submitting ${#DEMO_SAMPLES[@]} sample builds"
    local sample args expected=() ids=()
    for sample in "${DEMO_SAMPLES[@]}"; do
        args=${sample%|*}
        # shellcheck disable=SC2086
        ids+=("$("$master" build submit $args)")
        expected+=("${sample##*|}")
    done

    log "waiting for the builds (progress every second)"
    local deadline=$((SECONDS + 180)) counts
    while true; do
        counts=$("$master" status --json --finished | python3 -c '
import json, sys
b = json.load(sys.stdin)["builds"]
print(" ".join(f"{k}={v}" for k, v in sorted(b.items())))
active = sum(v for k, v in b.items() if k in ("NEEDSBUILD", "BUILDING", "GATHERING", "UPLOADING", "CANCELLING"))
sys.exit(0 if active == 0 else 3)') && { log "builds: $counts"; break; }
        log "builds: $counts"
        [ $SECONDS -lt $deadline ] || { log "timed out"; break; }
        sleep 1
    done

    echo
    "$master" build list
    echo
    "$master" builder list
    echo
    local failures=0 index status
    for index in "${!ids[@]}"; do
        status=$("$master" build show "${ids[$index]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build"]["status"])')
        if [ "$status" = "${expected[$index]}" ]; then
            echo "ok    build ${ids[$index]}: $status"
        else
            echo "WRONG build ${ids[$index]}: $status, expected ${expected[$index]}"
            failures=$((failures + 1))
        fi
    done
    echo
    stop_processes
    if [ $failures -eq 0 ]; then
        log "demo passed: every build reached the state it should"
        return 0
    fi
    log "demo FAILED: $failures build(s) in the wrong state (logs in $demo)"
    return 1
}
