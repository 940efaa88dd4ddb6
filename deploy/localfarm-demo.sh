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

# demo --real: real Debian builds on an agent of this machine's architecture with the real binarypackage
# command (GNU hello from the Debian archive apt uses here, a package that fails to build, one whose build
# dependency no archive has), next to the arm64 sample builds. Root only (the build command unpacks a root,
# mounts and chroots); the first run makes the chroot with mmdebstrap (about 30 s).
DEMO_REAL_SAMPLES=(
    "hello 2.10-3 --from-archive --urgency high|FULLYBUILT"
    "buildd-test-fails 1.0 --dsc SOURCES/buildd-test-fails_1.0.dsc|FAILEDTOBUILD"
    "buildd-test-depwait 1.0 --dsc SOURCES/buildd-test-depwait_1.0.dsc|MANUALDEPWAIT"
)

cmd_demo() {
    local real=0
    case "${1:-}" in
        --real) real=1 ;;
        "") ;;
        *) die "usage: deploy/localfarm demo [--real]" ;;
    esac
    local host_arch=""
    if [ $real = 1 ]; then
        [ "$(id -u)" = 0 ] || die "demo --real needs root: its build command unpacks a root, mounts /proc and chroots"
        host_arch=$(dpkg --print-architecture)
        command -v dpkg-source >/dev/null || apt_install dpkg-dev
        # The sample builds of this machine's architecture make way for the real ones.
        local kept=() sample
        for sample in "${DEMO_SAMPLES[@]}"; do
            case "$sample" in "ubuntu/noble/$host_arch "*) ;; *) kept+=("$sample") ;; esac
        done
        DEMO_SAMPLES=("${kept[@]}")
        DEMO_AGENTS=("demo-$host_arch-real $host_arch" "demo-arm64-1 arm64")
    fi
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
    # Others may pass through (the builds run as nobody, in their agents' work folders) but not list it; the
    # agents' secrets and configurations in it are 0600.
    chmod 711 "$demo"

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
    if [ $real = 1 ]; then
        "$master" archseries add "debian/bookworm/$host_arch" --processor "$host_arch"
    fi

    log "starting the master (HTTP on 127.0.0.1:$HTTP_PORT, log $demo/master.log)"
    start_process master "$demo/master.log" "$master" serve --http-port "$HTTP_PORT" --artifacts "$demo/artifacts" \
        --name demo-master
    until curl -sf "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null; do
        kill -0 "$(cat "$STATE/run/master.pid")" 2>/dev/null || { tail "$demo/master.log" >&2; die "master died"; }
        sleep 0.2
    done
    if [ $real = 1 ]; then
        local tarball
        tarball=$(make_chroot bookworm "$host_arch")
        "$master" archseries chroot "debian/bookworm/$host_arch" "$tarball" --artifacts "$demo/artifacts"
    fi

    local entry name processor password
    for entry in "${DEMO_AGENTS[@]}"; do
        read -r name processor <<<"$entry"
        # Each agent has its own broker user; topic permissions let it publish only <its name>.* events.
        password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
        mgmt PUT "/users/$name" "{\"password\":\"$password\",\"tags\":\"\"}"
        # As deploy/rabbitmq/enrol-agent grants: consume its own queues, publish to buildd.status, nothing else.
        mgmt PUT "/permissions/buildd-demo/$name" "{\"configure\":\"^\$\",\"write\":\"^buildd\\\\.status\$\",\"read\":\"^buildd\\\\.(jobs\\\\.$processor|control\\\\.$name)\$\"}"
        mgmt PUT "/topic-permissions/buildd-demo/$name" "{\"exchange\":\"buildd.status\",\"write\":\"^$name\\\\.\",\"read\":\"^\$\"}"
        umask 077
        echo "$password" > "$demo/$name.secret"
        cat > "$demo/$name.conf" <<CONF
[agent]
name = $name
processors = $processor
workdir = $demo/work-$name
build_user = nobody  # as root, builds run as nobody (never as root or as the agent)
heartbeat = 2
$(if [ "$name" = "demo-$host_arch-real" ]; then echo "privileged_commands = binarypackage"; fi)

[broker]
url = amqp://$name@127.0.0.1:$AMQP_PORT/buildd-demo
password_file = $demo/$name.secret

[master]
url = http://127.0.0.1:$HTTP_PORT
insecure_http = true  # loopback only: masters and agents on this machine

[commands]
binarypackage = $ROOT/deploy/examples/$(if [ "$name" = "demo-$host_arch-real" ]; then echo binarypackage; else echo sample-build; fi)
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
    local real_started=$SECONDS hello_id=""
    if [ $real = 1 ]; then
        log "submitting ${#DEMO_REAL_SAMPLES[@]} real builds for debian/bookworm/$host_arch"
        mkdir -p "$demo/sources"
        (cd "$demo/sources" && for package in buildd-test-fails buildd-test-depwait; do
            dpkg-source -b "$ROOT/deploy/examples/packages/$package" >/dev/null; done)
        for sample in "${DEMO_REAL_SAMPLES[@]}"; do
            args=${sample%|*}
            args=${args//SOURCES/$demo/sources}
            # shellcheck disable=SC2086
            ids+=("$("$master" build submit "debian/bookworm/$host_arch" $args --artifacts "$demo/artifacts")")
            expected+=("${sample##*|}")
            case "$sample" in hello*) hello_id=${ids[-1]} ;; esac
        done
    fi

    log "waiting for the builds (progress every second)"
    local deadline=$((SECONDS + (real ? 600 : 180))) counts
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
    if [ -n "$hello_id" ]; then
        echo
        local deb="$demo/results/hello_2.10-3_${host_arch}.deb"
        mkdir -p "$demo/results"
        if curl -sf -o "$deb" "http://127.0.0.1:$HTTP_PORT/v1/builds/$hello_id/files/hello_2.10-3_${host_arch}.deb"; then
            local log_name took
            log_name=$("$master" build show "$hello_id" | sed -n 's/^  \(buildlog_[^ ]*\).*/\1/p')
            took=$(curl -sf "http://127.0.0.1:$HTTP_PORT/v1/builds/$hello_id/files/$log_name" \
                | sed -n 's/^binarypackage \[\([0-9]*\) s\]: built .*/\1 s/p')
            echo "real builds: $((SECONDS - real_started)) s from submit to the last one ending; hello's build command: ${took:-?}"
            echo "hello's package: $deb"
            dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Installed-Size\):/  \1:/p'
            echo "hello's build log: $log_name (buildd-master build show $hello_id)"
        else
            echo "WRONG hello built no package to fetch"
            failures=$((failures + 1))
        fi
    fi
    echo
    stop_processes
    if [ $failures -eq 0 ]; then
        log "demo passed: every build reached the state it should"
        return 0
    fi
    log "demo FAILED: $failures build(s) in the wrong state (logs in $demo)"
    return 1
}
