# Sourced by deploy/localfarm (after localfarm-chaos.sh): `chaos --real`, the fault-injection run with real
# Debian builds.
#
#   deploy/localfarm chaos --real [BUILDS] [MINUTES]
#
# BUILDS real builds (default 24; a third each): GNU hello from the Debian archive this machine's apt uses, the
# package whose build fails (deploy/examples/packages/buildd-test-fails) and the one whose build dependency no
# archive has (buildd-test-depwait), built by deploy/examples/binarypackage in a root of their own (an overlay on
# the cached chroot, mount and PID namespaces) by BUILDD_CHAOS_AGENTS agents (default 3) in parallel, while:
#   - an agent is SIGKILLed while its build runs dpkg-buildpackage (each build at most once, so that every build
#     can still end as its package says) and restarted a moment later: its orphaned build must be stopped and
#     the build retried;
#   - a master is SIGKILLed and restarted every 15-25 s (two masters share one artifact store);
#   - RabbitMQ is restarted 20 s in and PostgreSQL crashed (pg_ctl -m immediate) and restarted 40 s in, then
#     each every 120 s (early enough that both happen even in the short form: a hello build alone takes
#     about 40 s, and the first interrupted one a lease more).
# When every build has ended (or MINUTES passed, default 40), the agents are stopped and the checker
# (deploy/bench/chaos_real_check.py) fails unless: each hello ended FULLYBUILT with a .deb that is hello's and
# matches its digest, each failing build FAILEDTOBUILD from its package's failure, each dep-wait MANUALDEPWAIT
# naming the missing relation; every kind of fault happened, one agent at least killed mid-dpkg-buildpackage;
# no build folder, mount, process or namespace of a build is left on any agent; and each agent's chroot cache
# is intact (the tarball's SHA-256 is its name, the unpacked tree the builds share is the tarball's content).
# Needs root (builds unpack roots, mount and chroot).

chaos_real_start_master() {  # chaos_real_start_master N
    local n=$1 port=$((HTTP_PORT + 20 + $1))
    # A 15 s lease: an agent killed mid-build is noticed 15 s later (its build retried), while three real
    # builds on two cores leave the heartbeats (every second) plenty of time. The accept timeout outlasts a
    # job waiting in the processor's queue while every agent builds.
    start_process "chaos-real-master-$n" "$CHAOS/master-$n.log" "$CHAOS_BIN/buildd-master" serve --name "real-m$n" \
        --http-port "$port" --public-url "http://127.0.0.1:$port" --artifacts "$CHAOS/artifacts" \
        --lease 15 --accept-timeout 600
    disown "$!" 2>/dev/null || true
}

chaos_real_start_agent() {  # chaos_real_start_agent NAME
    local name=$1
    # The agent's earlier log is kept: a restart appends.
    start_process "chaos-real-agent-$name" "$CHAOS/agent-$name.log.$(date +%s%N)" \
        "$CHAOS_BIN/buildd-agent" run -c "$CHAOS/$name.conf"
    disown "$!" 2>/dev/null || true
}

# The builds whose dpkg-buildpackage runs right now, as lines "AGENT BUILD-ATTEMPT": the processes rooted in an
# agent's build folder (/proc/PID/root is the build's root, work/AGENT/build-ID-ATTEMPT/root).
chaos_real_building() {
    local pid root rest
    for pid in $(pgrep -f dpkg-buildpackage || true); do
        root=$(readlink "/proc/$pid/root" 2>/dev/null) || continue
        case "$root" in "$CHAOS/work/"*/build-*/root) ;; *) continue ;; esac
        rest=${root#"$CHAOS/work/"}
        echo "${rest%%/*} $(basename "$(dirname "$root")")"
    done | sort -u
}

chaos_real_sql() { PGOPTIONS="-c client_min_messages=warning" psql -qAt -h 127.0.0.1 -p "$PG_PORT" -U postgres -d buildd_chaos_real "$@"; }

cmd_chaos_real() {
    local builds=${1:-24} minutes=${2:-40} agents=${BUILDD_CHAOS_AGENTS:-3}
    [ "$(id -u)" = 0 ] || die "real builds need root (the build command unpacks a root, mounts and chroots)"
    [ "$builds" -ge 3 ] || die "at least 3 builds: one of each package"
    trap down EXIT
    services
    cd "$ROOT"
    build_farm_binaries
    command -v dpkg-source >/dev/null || apt_install dpkg-dev
    local arch chroot
    arch=$(dpkg --print-architecture)
    chroot=$(make_chroot bookworm "$arch")
    CHAOS_BIN=$FARM_BIN
    CHAOS=$STATE/chaos-real
    rm -rf "$CHAOS" && mkdir -p "$CHAOS/artifacts" "$CHAOS/work" "$CHAOS/sources"
    : > "$CHAOS/faults.log"
    : > "$CHAOS/builds"
    # The namespaces that exist before the run: any other one found after it is a build's, left behind.
    lsns -n -o NS | sort -u > "$CHAOS/namespaces-before"
    fresh_target buildd_chaos_real buildd-chaos-real
    export BUILDD_DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/buildd_chaos_real"
    export BUILDD_BROKER_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/buildd-chaos-real"
    local master="$CHAOS_BIN/buildd-master" series="debian/bookworm/$arch"
    "$master" migrate >/dev/null
    "$master" processor add "$arch" >/dev/null
    "$master" archseries add "$series" --processor "$arch" >/dev/null
    "$master" archseries chroot "$series" "$chroot" --artifacts "$CHAOS/artifacts" >/dev/null
    local urls="" n i name names=()
    for n in 1 2; do urls="$urls${urls:+,}http://127.0.0.1:$((HTTP_PORT + 20 + n))"; done
    echo guest > "$CHAOS/secret" && chmod 0600 "$CHAOS/secret"
    for i in $(seq "$agents"); do
        name=$(printf 'real-%02d' "$i")
        names+=("$name")
        "$master" builder add "$name" --processor "$arch" --no-sender-check >/dev/null
        cat > "$CHAOS/$name.conf" <<CONF
[agent]
name = $name
processors = $arch
workdir = $CHAOS/work/$name
build_user = nobody  # the package build runs as nobody; binarypackage alone starts as root
privileged_commands = binarypackage
heartbeat = 1
[broker]
url = amqp://guest@127.0.0.1:$AMQP_PORT/buildd-chaos-real
password_file = $CHAOS/secret
[master]
url = $urls
insecure_http = true  # loopback only: masters and agents on this machine
[commands]
binarypackage = $ROOT/deploy/examples/binarypackage
CONF
    done

    # The sources: hello from the archive once (apt), the two test packages from the checkout; then each
    # build submitted from its .dsc, as an operator's `build submit` does.
    log "fetching hello 2.10-3 from the Debian archive and packing the two test packages"
    local first
    first=$("$master" build submit "$series" hello 2.10-3 --from-archive --artifacts "$CHAOS/artifacts") \
        || die "build submit --from-archive hello failed"
    echo "$first hello" >> "$CHAOS/builds"
    local package
    for package in buildd-test-fails buildd-test-depwait; do
        cp -r "$ROOT/deploy/examples/packages/$package" "$CHAOS/sources/"
        (cd "$CHAOS/sources" && dpkg-source -b "$package" >/dev/null) || die "dpkg-source -b $package failed"
    done
    # hello's files, as the store holds them, beside the test packages' (the farm's own table of them).
    local file_name file_sha
    while IFS='|' read -r file_name file_sha; do
        cp "$CHAOS/artifacts/sha256/${file_sha:0:2}/$file_sha" "$CHAOS/sources/$file_name" \
            || die "cannot copy $file_name out of the artifact store"
    done < <(chaos_real_sql -c "SELECT name, sha256 FROM source_file WHERE build_id = $first")
    local kind id
    for i in $(seq 2 "$builds"); do
        case $((i % 3)) in
            1) kind=hello; id=$("$master" build submit "$series" hello 2.10-3 --dsc "$CHAOS/sources/hello_2.10-3.dsc" --artifacts "$CHAOS/artifacts") ;;
            2) kind=fails; id=$("$master" build submit "$series" buildd-test-fails 1.0 --dsc "$CHAOS/sources/buildd-test-fails_1.0.dsc" --artifacts "$CHAOS/artifacts") ;;
            0) kind=depwait; id=$("$master" build submit "$series" buildd-test-depwait 1.0 --dsc "$CHAOS/sources/buildd-test-depwait_1.0.dsc" --artifacts "$CHAOS/artifacts") ;;
        esac || die "build submit $kind failed"
        echo "$id $kind" >> "$CHAOS/builds"
    done
    log "queued $builds real builds: $(cut -d' ' -f2 "$CHAOS/builds" | sort | uniq -c | xargs)"

    for n in 1 2; do chaos_real_start_master "$n"; done
    for name in "${names[@]}"; do chaos_real_start_agent "$name"; done

    local start now deadline next_master next_agent next_broker next_pg ended=0 last_report=0
    local kills_master=0 kills_agent=0 restarts_broker=0 restarts_pg=0 killed_builds=" " line victim attempt
    start=$(date +%s)
    deadline=$((start + minutes * 60))
    next_master=$((start + 15)); next_agent=$start; next_broker=$((start + 20)); next_pg=$((start + 40))
    chaos_fault "start $builds real builds"
    log "faults begin: agents killed mid-dpkg-buildpackage, masters every 15-25 s, the broker and the database restarted"
    while true; do
        now=$(date +%s)
        ended=$(chaos_real_sql -c "SELECT count(*) FROM build WHERE status NOT IN ('NEEDSBUILD', 'BUILDING', 'GATHERING', 'UPLOADING', 'CANCELLING')" 2>/dev/null || echo "$ended")
        [ "$ended" -ge "$builds" ] && break
        if [ "$now" -ge "$deadline" ]; then log "time is up with $ended of $builds builds ended"; break; fi
        if [ "$now" -ge "$next_agent" ]; then
            # An agent whose build runs dpkg-buildpackage now, and whose build was never interrupted.
            victim="" attempt=""
            while read -r line; do
                [ -n "$line" ] || continue
                case "$killed_builds" in *" $(echo "${line#* }" | sed 's/^build-\([0-9]*\)-.*/\1/') "*) continue ;; esac
                victim=${line%% *} attempt=${line#* }
                break
            done <<< "$(chaos_real_building)"
            if [ -n "$victim" ]; then
                killed_builds="$killed_builds$(echo "$attempt" | sed 's/^build-\([0-9]*\)-.*/\1/') "
                chaos_kill "chaos-real-agent-$victim" "kill agent $victim mid-dpkg-buildpackage $attempt" \
                    chaos_real_start_agent "$victim"
                kills_agent=$((kills_agent + 1))
                next_agent=$((now + 20 + RANDOM % 10))
            fi
        fi
        if [ "$now" -ge "$next_master" ]; then
            n=$((RANDOM % 2 + 1))
            chaos_kill "chaos-real-master-$n" "kill master real-m$n" chaos_real_start_master "$n"
            kills_master=$((kills_master + 1))
            next_master=$((now + 15 + RANDOM % 11))
        fi
        if [ "$now" -ge "$next_broker" ]; then
            if chaos_restart_broker; then restarts_broker=$((restarts_broker + 1)); fi
            next_broker=$(( $(date +%s) + 120 ))
        fi
        if [ "$now" -ge "$next_pg" ]; then
            if chaos_crash_database chaos_real_sql; then restarts_pg=$((restarts_pg + 1)); fi
            next_pg=$(( $(date +%s) + 120 ))
        fi
        if [ $((now - last_report)) -ge 15 ]; then
            log "chaos --real: $ended of $builds builds ended after $((now - start)) s; killed $kills_agent agents mid-build," \
                "$kills_master masters; restarted the broker $restarts_broker and the database $restarts_pg times"
            last_report=$now
        fi
        sleep 1
    done
    chaos_fault "end"
    log "faults over after $(( $(date +%s) - start )) s; stopping the agents and checking each build machine"
    # The agents stop as an operator stops them (SIGTERM): what is left after that is left for good.
    for name in "${names[@]}"; do
        local pid
        pid=$(chaos_pid "chaos-real-agent-$name")
        chaos_alive "$pid" && kill -TERM "$pid" 2>/dev/null
    done
    for name in "${names[@]}"; do chaos_gone "$(chaos_pid "chaos-real-agent-$name")" || true; done
    local works=()
    for name in "${names[@]}"; do works+=(--agent-work "$CHAOS/work/$name"); done
    python3 "$ROOT/deploy/bench/chaos_real_check.py" --dir "$CHAOS" --master "$master" \
        --artifacts "$CHAOS/artifacts" --chroot "$chroot" "${works[@]}" | tee "$CHAOS/report.txt"
    local status=${PIPESTATUS[0]}
    stop_processes
    return "$status"
}
