# Sourced by deploy/localfarm (after localfarm-chaos.sh, whose queue and sample SQL it shares): the `cluster`
# command, the fault run on the distributed setup of docs/deploy.md.
#
#   deploy/localfarm cluster [BUILDS]    (root; Debian's iproute2 and iptables)
#
# Test hosts are network namespaces (bdc-*) joined by a bridge that lives in a namespace of its own
# (bdc-lan), each with its own address on 10.77.0.0/24 and an /etc/hosts naming every other one
# (/etc/netns/bdc-*/hosts): rmq1-rmq3, a RabbitMQ cluster (quorum queues, deploy/rabbitmq/definitions.json,
# pause_minority); pg1, a PostgreSQL primary, and pg2, its synchronous streaming replica; m1-m3, three
# masters given every broker node and the multi-host database URL (target_session_attrs=read-write); a01-a06,
# one agent each (amd64 and arm64), given every node and every master; ctl, where the operator's commands,
# the submitter and the checker run. BUILDS builds (default 5,000) are queued, and submits trickle in from
# ctl throughout (one every 2 s); while they run, each fault happens once, in this order:
#
#   rmq-stop          the RabbitMQ node with the most client connections is stopped, then started again
#   rmq-partition     the node with the most client connections is cut off from the other two, then healed
#   master-broker     a master is cut off from every broker node (not from the database), then let back
#   master-database   the master holding the most status shards is cut off from both database hosts (not
#                     from the broker), then let back: it must step down so that another master takes them
#   agent-lease       an agent is cut off in the middle of a build for 3 leases, then let back: its late
#                     events must be refused by the build's fencing token (the attempt)
#   agent-stop        an agent is cut off mid-build and told to stop (SIGTERM): it must stop within its
#                     stop_timeout; it is started again still cut off, then let back, and delivers then
#   agent-slow        200 ms of latency and 5% packet loss on one agent's link for 30 s (deploy/cluster/
#                     netdelay.py holds the packets: this kernel has no sch_netem; iptables drops the 5%)
#   pg-failover       the primary's host dies (every process in it SIGKILLed) and deploy/cluster/pg-failover
#                     promotes the replica
#   pg-failback       the way back: deploy/cluster/pg-rejoin rebuilds the dead primary as a synchronous standby
#                     of the new one (pg_rewind, or a fresh base backup), then a switchover (the new primary
#                     stopped cleanly, pg-failover, pg-rejoin) makes pg1 the primary and pg2 its standby again
#
# The checker (deploy/bench/chaos_check.py) then prints builds lost, completed twice and builders with two
# builds at once (all must be 0), acknowledged submits missing after the failover (must be 0), the longest a
# build whose command ended in master-database's window waited for the farm to record its end (must be under
# the run's 5 s lease: the cut master steps down and another applies its builders' events), and per fault
# kind the time to the first build ended after it began and after it ended, the longest stall (no build
# ended) in its window and when it began, and the longest wait to be recorded; (a stall in this farm-wide
# sense cannot be shorter than a build: with `cluster 300` a build lasts up to 7 s, so the bound is on the
# wait, which does not depend on how long builds take); the report is in .localfarm/cluster/report.txt. Everything is torn down when the run ends,
# also on failure, Ctrl-C or SIGTERM, and the run fails if a namespace, host file, link or process of its
# own is left (rules live in the namespaces; the root namespace is never changed). BUILDD_CLUSTER_AGENTS
# sets the number of agents (default 6, from 3 to 99).

CL_PREFIX=bdc-
CL_NET=10.77.0
CL_RABBITS=(rmq1 rmq2 rmq3)
CL_MASTERS=(m1 m2 m3)

cl_log() { log "cluster: $*"; }
cl_fault() { echo "$(date +%s.%N) $*" >> "$CL/faults.log"; }
cl_ns() { echo "$CL_PREFIX$1"; }
cl_in() { local host=$1; shift; ip netns exec "$(cl_ns "$host")" "$@"; }

# Every host of the run: name and address.
cl_hosts() {
    echo "ctl $CL_NET.2"
    local i
    for i in 1 2 3; do echo "rmq$i $CL_NET.1$i"; done
    echo "pg1 $CL_NET.21"
    echo "pg2 $CL_NET.22"
    for i in 1 2 3; do echo "m$i $CL_NET.3$i"; done
    for i in $(seq "$CL_AGENTS"); do printf 'a%02d %s.%d\n' "$i" "$CL_NET" $((100 + i)); done
}

cl_ip() { cl_hosts | awk -v h="$1" '$1 == h { print $2 }'; }

cl_teardown() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk -v p="$CL_PREFIX" 'index($1, p) == 1 { print $1 }'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    done
    sleep 0.3
    for ns in $(ip netns list 2>/dev/null | awk -v p="$CL_PREFIX" 'index($1, p) == 1 { print $1 }'); do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -f "$STATE"/run/cluster-*.pid 2>/dev/null || true
}

# On the way out, also on failure or a signal: nothing may interrupt the teardown.
cl_cleanup() {
    trap '' INT TERM
    set +e
    [ -n "${CL:-}" ] && touch "$CL/stop-submitting"
    cl_stop_all
    cl_teardown
}

# Stops the masters and agents: SIGTERM to all at once, SIGKILL to what still runs 10 s later.
cl_stop_all() {
    local pidfile pids=() pid
    for pidfile in "$STATE"/run/cluster-*.pid; do
        [ -e "$pidfile" ] || continue
        pids+=("$(cat "$pidfile")")
        rm -f "$pidfile"
    done
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 1 ] || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# What the run leaves behind: namespaces, their host files, links in the root namespace, processes. Prints it.
cl_leftovers() {
    ip netns list 2>/dev/null | awk -v p="$CL_PREFIX" 'index($1, p) == 1 { print "namespace " $1 }'
    ls -d /etc/netns/"$CL_PREFIX"* 2>/dev/null | sed 's/^/host file /' || true
    ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^v-/ { print "link " $2 }'
    pgrep -af -- "$CL/|${CL_PG:-$CL}/" | sed 's/^/process /' || true
}

cl_make_hosts() {
    local lan host ip
    lan=$(cl_ns lan)
    ip netns add "$lan"
    ip -n "$lan" link add br0 type bridge
    ip -n "$lan" link set br0 up
    local hosts_file=$CL/hosts
    { echo "127.0.0.1 localhost $(hostname)"; cl_hosts | awk '{ print $2, $1 }'; } > "$hosts_file"
    while read -r host ip; do
        local ns
        ns=$(cl_ns "$host")
        ip netns add "$ns"
        ip -n "$lan" link add "v-$host" type veth peer name eth0 netns "$ns"
        ip -n "$lan" link set "v-$host" master br0
        ip -n "$lan" link set "v-$host" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        mkdir -p "/etc/netns/$ns"
        cp "$hosts_file" "/etc/netns/$ns/hosts"
    done < <(cl_hosts)
    cl_in ctl getent hosts rmq3 | grep -q "$CL_NET.13" || die "host names do not resolve inside the namespaces"
    cl_log "$(cl_hosts | wc -l) hosts on a bridge ($CL_NET.0/24)"
}

# --- cut-offs, inside a host's own namespace (iptables-legacy: this kernel's nftables has no queue) ---

cl_iptables() { local host=$1; shift; cl_in "$host" iptables-legacy -w "$@"; }

cl_cut() {  # cl_cut HOST PEER...: drop everything between HOST and the PEERs (both directions)
    local host=$1 peer ip
    shift
    for peer in "$@"; do
        ip=$(cl_ip "$peer")
        cl_iptables "$host" -A INPUT -s "$ip" -j DROP
        cl_iptables "$host" -A OUTPUT -d "$ip" -j DROP
    done
}

cl_heal() { cl_iptables "$1" -F INPUT; cl_iptables "$1" -F OUTPUT; cl_iptables "$1" -t mangle -F OUTPUT; }

cl_isolate() { cl_iptables "$1" -A INPUT -i eth0 -j DROP; cl_iptables "$1" -A OUTPUT -o eth0 -j DROP; }

# --- RabbitMQ ---------------------------------------------------------------------------------------------

cl_rabbit_env() {  # cl_rabbit_env NODE (rmq1...)
    local dir=$CL/$1
    export RABBITMQ_NODENAME=rabbit@$1 RABBITMQ_NODE_PORT=5672 RABBITMQ_DIST_PORT=25672
    export RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_CONFIG_FILE=$dir/rabbitmq
    export RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
    export RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf RABBITMQ_PID_FILE=$dir/rabbit.pid HOME=$dir/home
    unset ERL_EPMD_PORT ERL_EPMD_ADDRESS RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
}

cl_rabbitmqctl() {  # cl_rabbitmqctl NODE ARGS...
    local node=$1
    shift
    ( cl_rabbit_env "$node"; cl_in "$node" "$RABBIT_BIN/rabbitmqctl" -n "rabbit@$node" "$@" )
}

cl_rabbit_start() {
    local node=$1 dir=$CL/$1
    ( cl_rabbit_env "$node"; cd "$dir"; setsid ip netns exec "$(cl_ns "$node")" "$RABBIT_BIN/rabbitmq-server" \
        >>"$dir/server.out" 2>&1 < /dev/null & )
    local tries=0
    until cl_rabbitmqctl "$node" wait --timeout 60 "$dir/rabbit.pid" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ $tries -lt 3 ] || { tail -n 30 "$dir/server.out" >&2; die "RabbitMQ node $node did not start"; }
        sleep 1
    done
}

cl_rabbit_setup() {
    local node
    for node in "${CL_RABBITS[@]}"; do
        local dir=$CL/$node
        mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
        : > "$dir/rabbitmq-env.conf"
        echo "[rabbitmq_management,rabbitmq_consistent_hash_exchange]." > "$dir/enabled_plugins"
        printf 'buildd-cluster-cookie' > "$dir/home/.erlang.cookie"
        chmod 0400 "$dir/home/.erlang.cookie"
        # pause_minority: a node cut off from the other two stops serving, and its clients go to the others.
        # A 10 s net tick notices a lost peer in 10-15 s rather than a minute.
        cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 5672
management.tcp.port = 15672
cluster_partition_handling = pause_minority
log.console = false
log.file.level = warning
CONF
        echo '[{kernel, [{net_ticktime, 10}]}].' > "$dir/advanced.config"
    done
    cl_log "starting RabbitMQ on rmq1, then rmq2 and rmq3 joining it (docs/deploy.md, section 2)"
    cl_rabbit_start rmq1
    for node in rmq2 rmq3; do
        cl_rabbit_start "$node"
        cl_rabbitmqctl "$node" stop_app >/dev/null
        cl_rabbitmqctl "$node" join_cluster rabbit@rmq1 >/dev/null
        cl_rabbitmqctl "$node" start_app >/dev/null
    done
    cl_rabbitmqctl rmq1 add_user admin admin >/dev/null
    cl_rabbitmqctl rmq1 set_user_tags admin administrator >/dev/null
    cl_rabbitmqctl rmq1 import_definitions "$ROOT/deploy/rabbitmq/definitions.json" >/dev/null
    cl_rabbitmqctl rmq1 set_permissions -p buildd admin '.*' '.*' '.*' >/dev/null
    local running
    running=$(cl_rabbit_running rmq1)
    [ "$running" = 3 ] || die "the RabbitMQ cluster has $running running nodes, not 3"
    cl_log "RabbitMQ cluster of 3 nodes up, definitions imported"
}

cl_rabbit_running() {  # the number of running nodes NODE sees in its cluster
    cl_rabbitmqctl "$1" cluster_status --formatter json 2>/dev/null \
        | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["running_nodes"]))' 2>/dev/null || echo 0
}

cl_mgmt() {  # cl_mgmt PATH: GET from the first node that answers
    local node
    for node in "${CL_RABBITS[@]}"; do
        cl_in ctl curl -sf -m 3 -u admin:admin "http://$node:15672/api$1" && return 0
    done
    return 1
}

# The node with the most client connections now.
cl_busiest_node() {
    cl_mgmt /connections | python3 -c '
import collections, json, sys
nodes = collections.Counter(c["node"].split("@")[1] for c in json.load(sys.stdin))
print(nodes.most_common(1)[0][0] if nodes else "rmq1")'
}

# The master that is the single active consumer of the most status shards now (m2 when the broker says none).
cl_shard_holder() {
    cl_mgmt /connections > "$CL/connections.json" 2>/dev/null || echo '[]' > "$CL/connections.json"
    cl_mgmt /consumers/buildd > "$CL/consumers.json" 2>/dev/null || echo '[]' > "$CL/consumers.json"
    python3 - "$CL/connections.json" "$CL/consumers.json" <<'PY'
import collections, json, sys
connections = json.load(open(sys.argv[1]))
names = {c["name"]: c.get("user_provided_name") or c.get("client_properties", {}).get("connection_name", "")
         for c in connections}
held = collections.Counter(
    names.get(c["channel_details"]["connection_name"], "") for c in json.load(open(sys.argv[2]))
    if c["queue"]["name"].startswith("buildd.status.shard.") and c.get("activity_status") == "single_active")
masters = [(n, name[len("buildd-master-"):]) for name, n in held.most_common() if name.startswith("buildd-master-")]
print(masters[0][1] if masters else "m2")
PY
}

# --- PostgreSQL -------------------------------------------------------------------------------------------

cl_pg_setup() {
    local bin
    bin=$(pg_bin)
    CL_PG=$(dirname "$PG_DIR")/cluster-pg
    rm -rf "$CL_PG"
    mkdir -p "$CL_PG/pg1" "$CL_PG/pg2"
    chown -R postgres "$CL_PG"
    as_postgres "$bin/initdb" -D "$CL_PG/pg1/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
    cat >> "$CL_PG/pg1/data/postgresql.conf" <<CONF
listen_addresses = '*'
port = 5432
unix_socket_directories = '$CL_PG/pg1'
max_connections = 200
wal_level = replica
max_wal_senders = 5
# pg_rewind needs it to bring a failed primary back as a standby (deploy/cluster/pg-rejoin), and WAL back to
# the last checkpoint the two servers share: the crash recovery pg_rewind runs first ends with a checkpoint
# that would otherwise recycle it.
wal_log_hints = on
wal_keep_size = '256MB'
# Synchronous: a commit returns only when pg2 has it, so what a master or submitter was told is committed
# survives the primary's death.
synchronous_standby_names = 'pg2'
synchronous_commit = on
CONF
    printf 'host all all %s.0/24 trust\nhost replication all %s.0/24 trust\n' "$CL_NET" "$CL_NET" \
        >> "$CL_PG/pg1/data/pg_hba.conf"
    cl_in pg1 runuser -u postgres -- "$bin/pg_ctl" -D "$CL_PG/pg1/data" -l "$CL_PG/pg1/postgres.log" -w -t 60 start \
        >/dev/null || { tail -n 20 "$CL_PG/pg1/postgres.log" >&2; die "PostgreSQL on pg1 did not start"; }
    cl_in pg2 runuser -u postgres -- "$bin/pg_basebackup" -h pg1 -U postgres -D "$CL_PG/pg2/data" -X stream -R \
        -d "host=pg1 user=postgres application_name=pg2" >/dev/null
    sed -i "s|^unix_socket_directories = .*|unix_socket_directories = '$CL_PG/pg2'|" "$CL_PG/pg2/data/postgresql.conf"
    cl_in pg2 runuser -u postgres -- "$bin/pg_ctl" -D "$CL_PG/pg2/data" -l "$CL_PG/pg2/postgres.log" -w -t 60 start \
        >/dev/null || { tail -n 20 "$CL_PG/pg2/postgres.log" >&2; die "PostgreSQL on pg2 did not start"; }
    cl_in ctl psql -qAtX -h pg1 -U postgres -d postgres -c "CREATE DATABASE buildd" >/dev/null
    local state
    state=$(cl_in ctl psql -qAtX -h pg1 -U postgres -d postgres -c "SELECT application_name || ' ' || sync_state FROM pg_stat_replication")
    [ "$state" = "pg2 sync" ] || die "pg2 is not a synchronous standby of pg1 (pg_stat_replication: '$state')"
    cl_log "PostgreSQL primary on pg1, synchronous streaming replica on pg2"
}

cl_sql() { PGCONNECT_TIMEOUT=3 PGOPTIONS="-c client_min_messages=warning" cl_in ctl psql -qAtX "$CL_DB_URL" "$@"; }

# --- masters, agents, submits -----------------------------------------------------------------------------

cl_start_master() {
    local m=$1
    start_process "cluster-$m" "$CL/$m.log" ip netns exec "$(cl_ns "$m")" "$CL_BIN/buildd-master" serve --name "$m" \
        --http-host 0.0.0.0 --http-port 8080 --public-url "http://$m:8080" --artifacts "$CL/artifacts" --lease 5 --accept-timeout 5
}

cl_start_agent() {
    local a=$1
    ( export CHAOS_DIR=$CL CHAOS_BUILDER=$a CHAOS_SLEEP=$CL_SLEEP
      start_process "cluster-$a" "$CL/$a.log" ip netns exec "$(cl_ns "$a")" "$CL_BIN/buildd-agent" run -c "$CL/$a.conf" )
    # (appending: the agent's earlier lives stay in its log)
}

cl_pid() { cat "$STATE/run/cluster-$1.pid" 2>/dev/null || true; }

# Submits one build at a time from ctl for as long as the run lasts; an acknowledged one (the command
# printed its id) is written to submits.log, a refused one to submits-failed.log.
cl_submitter() {
    local i=0 id processor
    while [ ! -e "$CL/stop-submitting" ]; do
        i=$((i + 1))
        processor=amd64; [ $((i % 2)) = 0 ] && processor=arm64
        if id=$(cl_in ctl "$CL_BIN/buildd-master" build submit "ubuntu/noble/$processor" chaos "2.0-$i" 2>>"$CL/submits.err"); then
            echo "$i $id" >> "$CL/submits.log"
        else
            echo "$i $(date +%s.%N)" >> "$CL/submits-failed.log"
        fi
        sleep 2
    done
}

# A builder running a build right now (its chaos-build is alive), else nothing.
cl_building_agent() {
    local pid who
    for pid in $(pgrep -f "deploy/bench/chaos-build" || true); do
        who=$(tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" | sed -n 's/^CHAOS_BUILDER=//p') || who=""
        [ -n "$who" ] && [ "$who" != "$1" ] && { echo "$who"; return; }
    done
}

cl_sample() {
    local count
    count=$(cl_sql -c "$(chaos_overlap_sql)" 2>/dev/null) || return 0
    echo "$(date +%s.%N) $count" >> "$CL/samples"
}

cl_ended() { cl_sql -c "SELECT count(*) FROM build WHERE source_name = 'chaos' AND status IN ('FULLYBUILT', 'FAILEDTOBUILD')" 2>/dev/null; }

# cl_wait SECONDS: lets the farm run, sampling and reporting
cl_wait() {
    local until=$((SECONDS + $1)) done
    while [ $SECONDS -lt $until ]; do
        cl_sample
        if [ $((SECONDS - CL_REPORTED)) -ge 10 ]; then
            done=$(cl_ended || echo "?")
            cl_log "$done builds ended, $(wc -l < "$CL/submits.log") submits acknowledged, after $((SECONDS - CL_STARTED)) s"
            CL_REPORTED=$SECONDS
        fi
        sleep 0.5
    done
}

# --- the faults -------------------------------------------------------------------------------------------

cl_fault_rmq_stop() {
    local node
    node=$(cl_busiest_node)
    cl_log "fault: stopping RabbitMQ node $node (the most client connections)"
    cl_fault "rmq-stop begin: $node"
    cl_rabbitmqctl "$node" shutdown >/dev/null 2>&1 || true
    if cl_in "$node" "$RABBIT_BIN/rabbitmq-diagnostics" -q ping >/dev/null 2>&1; then
        cl_fault "FAILED rmq-stop: $node still answers"
    fi
    cl_wait 15
    cl_rabbit_start "$node"
    local tries=0
    until [ "$(cl_rabbit_running "$node")" = 3 ]; do
        tries=$((tries + 1))
        [ $tries -lt 60 ] || { cl_fault "FAILED rmq-stop: $node did not rejoin"; return; }
        sleep 1
    done
    cl_fault "rmq-stop end: $node back, 3 nodes running"
}

cl_fault_rmq_partition() {
    local node others=() n
    node=$(cl_busiest_node)
    for n in "${CL_RABBITS[@]}"; do [ "$n" = "$node" ] || others+=("$n"); done
    cl_log "fault: partitioning RabbitMQ node $node from ${others[*]}"
    cl_fault "rmq-partition begin: $node cut off from ${others[*]}"
    cl_cut "$node" "${others[@]}"
    cl_wait 30
    local seen
    seen=$(cl_rabbit_running "${others[0]}")
    cl_heal "$node"
    [ "$seen" = 2 ] || cl_fault "FAILED rmq-partition: ${others[0]} saw $seen running nodes, not 2"
    # pause_minority resumes the paused node by itself once it sees the majority again; RabbitMQ 3.10 sometimes
    # leaves it stuck in its restart (Mnesia "inconsistent_database"). After 45 s the run does what an operator
    # would - restarts the node's service - and says so in the fault log.
    local healed=$SECONDS restarted=""
    until cl_rabbit_healed "$node" "${others[0]}"; do
        if [ -z "$restarted" ] && [ $((SECONDS - healed)) -ge 45 ]; then
            cl_log "RabbitMQ node $node did not resume by itself within 45 s of the heal; restarting it"
            cl_fault "rmq-partition step: $node still paused 45 s after the heal, its service restarted"
            cl_rabbit_kill "$node"
            cl_rabbit_start "$node"
            restarted=" after its service was restarted"
        fi
        [ $((SECONDS - healed)) -lt 180 ] || { cl_fault "FAILED rmq-partition: the cluster did not heal"; return; }
        sleep 1
    done
    cl_fault "rmq-partition end: healed$restarted, 3 nodes running (the majority saw 2 while cut)"
}

cl_rabbit_healed() {  # both nodes' rabbit applications run (cluster_status needs it) and see 3 running nodes
    [ "$(cl_rabbit_running "$1")" = 3 ] && [ "$(cl_rabbit_running "$2")" = 3 ]
}

cl_rabbit_kill() {  # every process of NODE's host (its beam and epmd), as a crash or a service restart would
    local pid
    for pid in $(ip netns pids "$(cl_ns "$1")"); do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 1
}

cl_fault_master_broker() {
    cl_log "fault: m1 cut off from the broker nodes (not from the database)"
    cl_fault "master-broker begin: m1 cut off from ${CL_RABBITS[*]}"
    cl_cut m1 "${CL_RABBITS[@]}"
    cl_wait 20
    cl_heal m1
    cl_fault "master-broker end: m1 let back"
}

cl_fault_master_database() {
    # The master holding the most status shards: the one whose cut matters (it must step down).
    local master
    master=$(cl_shard_holder)
    cl_log "fault: $master (the most status shards) cut off from the database hosts (not from the broker)"
    cl_fault "master-database begin: $master cut off from pg1 pg2"
    cl_cut "$master" pg1 pg2
    cl_wait 20
    cl_heal "$master"
    local down
    down=$(grep -c "handing the status shards to the other masters" "$CL/$master.log" || true)
    cl_fault "master-database end: $master let back (it stepped down from the status shards $down times so far)"
}

cl_fault_agent_lease() {
    local agent
    agent=$(cl_building_agent "")
    [ -n "$agent" ] || { cl_fault "FAILED agent-lease: no agent was building"; return; }
    cl_log "fault: $agent cut off mid-build for 3 leases"
    CL_LEASE_AGENT=$agent
    cl_fault "agent-lease begin: $agent cut off mid-build"
    cl_isolate "$agent"
    cl_wait 15
    cl_heal "$agent"
    cl_fault "agent-lease end: $agent let back"
}

cl_fault_agent_stop() {
    local agent pid started stopped
    agent=$(cl_building_agent "$CL_LEASE_AGENT")
    [ -n "$agent" ] || { cl_fault "FAILED agent-stop: no agent was building"; return; }
    pid=$(cl_pid "$agent")
    cl_log "fault: $agent cut off mid-build, then told to stop"
    cl_fault "agent-stop begin: $agent cut off mid-build"
    cl_isolate "$agent"
    cl_wait 2
    started=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ $((SECONDS - started)) -lt 60 ]; do sleep 0.2; done
    stopped=$((SECONDS - started))
    if kill -0 "$pid" 2>/dev/null; then
        cl_fault "FAILED agent-stop: $agent still running 60 s after SIGTERM"
        kill -KILL "$pid" 2>/dev/null || true
    else
        cl_fault "agent-stop stopped: $agent in $stopped s (stop_timeout $CL_STOP_TIMEOUT s)"
        [ "$stopped" -le $((CL_STOP_TIMEOUT + 5)) ] || cl_fault "FAILED agent-stop: $stopped s is past its stop_timeout"
    fi
    cl_start_agent "$agent"
    cl_wait 5
    cl_heal "$agent"
    cl_fault "agent-stop end: $agent started again and let back"
}

cl_fault_agent_slow() {
    local agent=$CL_SLOW_AGENT
    cl_log "fault: 200 ms latency and 5% loss on $agent's link for 30 s"
    ip netns exec "$(cl_ns "$agent")" python3 "$ROOT/deploy/cluster/netdelay.py" --queue 7 --delay-ms 200 \
        >"$CL/netdelay.log" 2>&1 &
    local delayer=$!
    sleep 0.5
    cl_iptables "$agent" -A OUTPUT -o eth0 -m statistic --mode random --probability 0.05 -j DROP
    cl_iptables "$agent" -A OUTPUT -o eth0 -j NFQUEUE --queue-num 7
    cl_fault "agent-slow begin: $agent +200 ms, 5% loss"
    local before after rtt
    before=$(cl_sql -c "SELECT count(*) FROM build b JOIN builder r ON r.id = b.builder_id WHERE r.name = '$agent'" 2>/dev/null || echo 0)
    rtt=$(cl_in "$agent" curl -s -o /dev/null -m 5 -w '%{time_connect}' http://m1:8080/healthz || echo "?")
    cl_wait 30
    after=$(cl_sql -c "SELECT count(*) FROM build b JOIN builder r ON r.id = b.builder_id WHERE r.name = '$agent'" 2>/dev/null || echo 0)
    cl_heal "$agent"
    kill "$delayer" 2>/dev/null || true
    # The effect, checked: a TCP connect from the agent (one round trip) took at least the 200 ms.
    if python3 -c "import sys; sys.exit(0 if float('$rtt') >= 0.19 else 1)" 2>/dev/null; then
        cl_fault "agent-slow end: $agent healed; TCP connect took ${rtt}s while slowed; builds it took meanwhile: $((after - before))"
    else
        cl_fault "FAILED agent-slow: a TCP connect from $agent took '${rtt}' s while slowed, not 0.2 s or more"
    fi
}

cl_fault_pg_failover() {
    cl_log "fault: the PostgreSQL primary's host pg1 dies; deploy/cluster/pg-failover promotes pg2"
    cl_fault "pg-failover begin: every process on pg1 SIGKILLed"
    local pid
    for pid in $(ip netns pids "$(cl_ns pg1)"); do kill -KILL "$pid" 2>/dev/null || true; done
    sleep 1
    if cl_in pg2 "$ROOT/deploy/cluster/pg-failover" --data "$CL_PG/pg2/data" --old-primary pg1 2>>"$CL/failover.log"; then
        cl_fault "pg-failover end: pg2 promoted ($(tail -n 1 "$CL/failover.log"))"
    else
        cl_fault "FAILED pg-failover: $(tail -n 1 "$CL/failover.log")"
    fi
}

# The way back, as docs/deploy.md gives it to an operator: the dead primary's host is back; pg-rejoin rebuilds
# its server as a synchronous standby of the new primary (pg_rewind, or a fresh base backup where it cannot);
# then a planned switchover: the new primary is stopped cleanly (it sends all its WAL to the standby before
# it exits), pg-failover promotes pg1 again, and pg-rejoin makes pg2 its synchronous standby once more.
cl_fault_pg_failback() {
    local bin state
    bin=$(pg_bin)
    cl_log "fault: pg1 rebuilt as pg2's standby, then a switchover back to pg1 (deploy/cluster/pg-rejoin, pg-failover)"
    cl_fault "pg-failback begin: pg1 rebuilt as a standby of pg2"
    if ! cl_in pg1 "$ROOT/deploy/cluster/pg-rejoin" --data "$CL_PG/pg1/data" --primary pg2 --name pg1 2>>"$CL/failover.log"; then
        cl_fault "FAILED pg-failback: pg1 not rebuilt: $(tail -n 1 "$CL/failover.log")"
        return
    fi
    cl_fault "step: $(grep -E 'pg_rewind|base backup' "$CL/failover.log" | tail -n 1)"
    cl_fault "step: pg1 a synchronous standby of pg2; switching over: pg2 stopped cleanly"
    cl_in pg2 runuser -u postgres -- "$bin/pg_ctl" -D "$CL_PG/pg2/data" -m fast -w -t 60 stop >/dev/null
    if ! cl_in pg1 "$ROOT/deploy/cluster/pg-failover" --data "$CL_PG/pg1/data" --old-primary pg2 2>>"$CL/failover.log" ||
        ! cl_in pg2 "$ROOT/deploy/cluster/pg-rejoin" --data "$CL_PG/pg2/data" --primary pg1 --name pg2 2>>"$CL/failover.log"; then
        cl_fault "FAILED pg-failback: $(tail -n 1 "$CL/failover.log")"
        return
    fi
    state=$(cl_in ctl psql -qAtX -h pg1 -U postgres -d postgres -c \
        "SELECT (NOT pg_is_in_recovery())::text || ' ' || coalesce((SELECT application_name || ' ' || sync_state FROM pg_stat_replication), 'none')")
    if [ "$state" = "true pg2 sync" ]; then
        cl_fault "pg-failback end: pg1 primary again, pg2 its synchronous standby"
    else
        cl_fault "FAILED pg-failback: pg1 primary and pg2 synchronous expected, found '$state'"
    fi
}

# --- the run ----------------------------------------------------------------------------------------------

cmd_cluster() {
    local builds=${1:-5000}
    CL_AGENTS=${BUILDD_CLUSTER_AGENTS:-6}
    [ "$(id -u)" = 0 ] || die "the cluster run makes network namespaces: run it as root"
    [[ $builds =~ ^[0-9]+$ ]] && [ "$builds" -ge 50 ] || die "BUILDS must be a number, at least 50"
    [[ $CL_AGENTS =~ ^[0-9]+$ ]] && [ "$CL_AGENTS" -ge 3 ] && [ "$CL_AGENTS" -le 99 ] \
        || die "BUILDD_CLUSTER_AGENTS must be a number from 3 to 99"
    install_missing
    command -v ip >/dev/null || apt_install iproute2
    command -v iptables-legacy >/dev/null || apt_install iptables
    cd "$ROOT"
    build_farm_binaries
    CL_BIN=$FARM_BIN
    CL=$STATE/cluster
    cl_teardown
    trap cl_cleanup EXIT
    trap 'exit 130' INT TERM
    rm -rf "$CL" && mkdir -p "$CL/locks" "$CL/artifacts" "$CL/work"
    : > "$CL/journal"
    # The build command runs as the build user (nobody): it journals and takes its builder's lock here.
    chmod 0777 "$CL/locks" && chmod 0666 "$CL/journal"; : > "$CL/faults.log"; : > "$CL/samples"; : > "$CL/submits.log"; : > "$CL/submits-failed.log"
    cl_make_hosts
    cl_rabbit_setup
    cl_pg_setup

    # The settings of docs/deploy.md: every broker node, both database hosts, quorum queues.
    local broker="" node
    for node in "${CL_RABBITS[@]}"; do broker="$broker${broker:+,}amqp://buildd-master:master@$node:5672/buildd"; done
    # With this run's 5 s lease the TCP timeouts are shorter than buildd's defaults (5 s to connect, 10 s for
    # a statement on a connection whose host stopped answering, a third of the default 30 s lease), as an
    # operator with a short lease would set them: a statement on a cut link fails within a third of the lease,
    # so a master cut off from the database steps down from its status shards before the builders' leases run
    # out (connect_timeout cannot go below 2 s).
    CL_DB_URL="postgresql://postgres@pg1:5432,pg2:5432/buildd?target_session_attrs=read-write&connect_timeout=2&tcp_user_timeout=1500"
    export BUILDD_DATABASE_URL=$CL_DB_URL BUILDD_BROKER_URL=$broker BUILDD_QUEUE_TYPE=quorum
    export BUILDD_MANAGEMENT_URL=http://admin:admin@rmq1:15672 BUILDD_VHOST=buildd
    BUILDD_MASTER_PASSWORD=master cl_in ctl "$ROOT/deploy/rabbitmq/add-master-user" buildd-master 2>/dev/null
    cl_in ctl "$CL_BIN/buildd-master" migrate >/dev/null
    local processor
    for processor in amd64 arm64; do
        cl_in ctl "$CL_BIN/buildd-master" processor add "$processor" >/dev/null
        cl_in ctl "$CL_BIN/buildd-master" archseries add "ubuntu/noble/$processor" --processor "$processor" >/dev/null
    done
    echo agent > "$CL/agent.secret"
    chmod 0600 "$CL/agent.secret"
    CL_STOP_TIMEOUT=10
    local i agent masters="" agent_broker
    for node in "${CL_MASTERS[@]}"; do masters="$masters${masters:+, }http://$node:8080"; done
    for i in $(seq "$CL_AGENTS"); do
        agent=$(printf 'a%02d' "$i")
        processor=amd64; [ $((i % 2)) = 0 ] && processor=arm64
        BUILDD_AGENT_PASSWORD=agent cl_in ctl "$ROOT/deploy/rabbitmq/enrol-agent" "$agent" "$processor" 2>/dev/null
        cl_in ctl "$CL_BIN/buildd-master" builder add "$agent" --processor "$processor" --broker-user "$agent" >/dev/null
        agent_broker=""
        for node in "${CL_RABBITS[@]}"; do agent_broker="$agent_broker${agent_broker:+, }amqp://$agent@$node:5672/buildd"; done
        cat > "$CL/$agent.conf" <<CONF
[agent]
name = $agent
processors = $processor
workdir = $CL/work/$agent
build_user = nobody  # as root, builds run as nobody (never as root or as the agent)
heartbeat = 1
stop_timeout = $CL_STOP_TIMEOUT
[broker]
url = $agent_broker
password_file = $CL/agent.secret
queue_type = quorum
[master]
url = $masters
insecure_http = true  # loopback only: masters and agents on this machine
[commands]
binarypackage = $ROOT/deploy/bench/chaos-build
CONF
    done
    CL_SLOW_AGENT=$(printf 'a%02d' "$CL_AGENTS")
    # Builds last long enough that every fault happens while they run (the faults take about 260 s): about
    # 300 s of work for the agents, with the submits (one every 2 s) on top.
    CL_SLEEP=$(python3 -c "print('%.2f' % max(0.05, 300.0 * $CL_AGENTS / ($builds + 150) - 0.1))")
    for node in "${CL_MASTERS[@]}"; do cl_start_master "$node"; done
    for i in $(seq "$CL_AGENTS"); do cl_start_agent "$(printf 'a%02d' "$i")"; done
    cl_log "queueing $builds builds for amd64 and arm64 (a build takes about $CL_SLEEP s on its agent)"
    chaos_queue_sql "$builds" | cl_sql >/dev/null
    CL_STARTED=$SECONDS CL_REPORTED=$SECONDS CL_LEASE_AGENT=""
    cl_fault "start $builds builds"
    cl_submitter &
    local submitter=$!
    cl_wait 10
    local fault
    for fault in rmq_stop rmq_partition master_broker master_database agent_lease agent_stop agent_slow pg_failover pg_failback; do
        "cl_fault_$fault"
        cl_wait 10
    done
    touch "$CL/stop-submitting"
    wait "$submitter" 2>/dev/null || true
    local acknowledged total done deadline=$((SECONDS + 900))
    acknowledged=$(wc -l < "$CL/submits.log")
    total=$((builds + acknowledged))
    cl_log "faults over after $((SECONDS - CL_STARTED)) s; waiting for the rest of $total builds"
    while true; do
        done=$(cl_ended || echo 0)
        [ "$done" -ge "$total" ] && break
        [ $SECONDS -lt $deadline ] || { cl_log "time is up with $done of $total builds ended"; break; }
        cl_wait 2
    done
    cl_fault "end"
    cl_log "all over after $((SECONDS - CL_STARTED)) s; stopping the farm and checking"
    cl_stop_all
    local status
    set +e
    python3 "$ROOT/deploy/bench/chaos_check.py" --dir "$CL" --builds "$total" --database "$CL_DB_URL" \
        --psql-prefix "ip netns exec $(cl_ns ctl)" --submits "$CL/submits.log" \
        --kinds rmq-stop,rmq-partition,master-broker,master-database,agent-lease,agent-stop,agent-slow,pg-failover,pg-failback \
        --fenced-agent "$CL_LEASE_AGENT" --logs "$CL" --record-bound master-database=5 \
        --max-failed-share "${BUILDD_CHAOS_MAX_FAILED_SHARE:-0.05}" | tee "$CL/report.txt"
    status=${PIPESTATUS[0]}
    set -e
    trap - EXIT
    cl_teardown
    local left
    left=$(cl_leftovers)
    if [ -n "$left" ]; then echo "$left" >&2; die "the run left these behind"; fi
    cl_log "torn down: no namespace, host file, link or process left"
    return "$status"
}
