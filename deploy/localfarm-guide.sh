# deploy/localfarm guide: docs/deploy.md executed with the shipped files (sourced by deploy/localfarm).
#
# 1. Installs deploy/systemd/*.service, deploy/examples/master.env and agent.conf, the sample build command
#    and the binaries into a scratch root, rewriting only file-system paths into it (host names, ports,
#    users, queue type and URLs stay as shipped), and checks them (deploy/guide_check.py: systemd-analyze
#    verify, every command's flags against --help, master.env against what the master reads).
# 2. Makes a network namespace whose /etc/hosts (ip netns' /etc/netns/NAME/hosts) resolves the guide's host
#    names - db.example.org, broker.example.org, master1.example.org - to its own loopback, so the farm runs
#    on the guide's names and default ports (5432, 5672, 15672, 8080) without touching this machine's.
# 3. In it, follows the guide: one scratch CA signs db.example.org, broker.example.org and master1.example.org;
#    PostgreSQL with TLS (the shipped URL says sslmode=verify-full) and the role and database of section 1;
#    RabbitMQ with an amqps listener on 5671 and `rabbitmqctl import_definitions deploy/rabbitmq/definitions.json`,
#    then deploy/rabbitmq/add-master-user and enrol-agent; the master's unit command lines (migrate, serve)
#    with master.env; `processor add`, `archseries add`, `builder add --broker-user`; the agent's unit command
#    lines (check-config, run), the master serving HTTPS on 8443 and the agent checking it with ca_file; then
#    submits a build with a source file, waits for FULLYBUILT and downloads the .deb over HTTPS.
#
# What it leaves out: a second and third master and broker node (the cluster issue's run).

GUIDE_NS=buildd-guide

guide_cleanup() {
    local pid
    for pid in $(ip netns pids "$GUIDE_NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$GUIDE_NS" 2>/dev/null || true
    rm -rf "/etc/netns/$GUIDE_NS"
}

cmd_guide() {
    [ "$(id -u)" = 0 ] || die "the guide run makes a network namespace: run it as root"
    install_missing
    command -v ip >/dev/null || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
    cd "$ROOT"
    log "building buildd-master and buildd-agent"
    swift build --product buildd-master 2>&1 | grep -E 'error|warning: unre' || true
    swift build --product buildd-agent 2>&1 | grep -E 'error|warning: unre' || true
    local bin guide root
    bin=$(swift build --show-bin-path)
    [ -x "$bin/buildd-master" ] && [ -x "$bin/buildd-agent" ] || die "the build failed"
    guide=$STATE/guide
    root=$guide/root
    guide_cleanup
    rm -rf "$guide"
    mkdir -p "$guide"
    trap guide_cleanup EXIT

    log "installing the shipped files into $root"
    mkdir -p "$root/etc/systemd/system" "$root/etc/buildd" "$root/usr/bin" "$root/usr/share/buildd" \
        "$root/usr/lib/systemd" "$root/var/lib/buildd/artifacts" "$root/var/lib/buildd-agent"
    cp deploy/systemd/buildd-master.service deploy/systemd/buildd-agent.service "$root/etc/systemd/system/"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"   # the targets the units refer to
    cp "$bin/buildd-master" "$bin/buildd-agent" "$root/usr/bin/"
    install -m 0755 deploy/examples/sample-build "$root/usr/share/buildd/sample-build"
    # Only paths move into the scratch root; every other setting is the shipped one.
    sed -e "s|/var/lib/buildd|$root/var/lib/buildd|g" -e "s|/etc/buildd/|$root/etc/buildd/|g" deploy/examples/master.env \
        > "$root/etc/buildd/master.env"
    sed -e "s|/var/lib/buildd-agent|$root/var/lib/buildd-agent|g" -e "s|/etc/buildd/|$root/etc/buildd/|g" \
        -e "s|/usr/share/buildd/|$root/usr/share/buildd/|g" deploy/examples/agent.conf > "$root/etc/buildd/agent.conf"
    chmod 0600 "$root/etc/buildd/master.env" "$root/etc/buildd/agent.conf"

    log "checking the installed files"
    python3 deploy/guide_check.py "$root" "$ROOT" || die "the shipped files do not agree with the binaries"

    log "making network namespace $GUIDE_NS with the guide's host names"
    ip netns add "$GUIDE_NS"
    ip -n "$GUIDE_NS" link set lo up
    ip -n "$GUIDE_NS" addr add 127.0.0.2/8 dev lo 2>/dev/null || true
    mkdir -p "/etc/netns/$GUIDE_NS"
    cat > "/etc/netns/$GUIDE_NS/hosts" <<HOSTS
127.0.0.1 localhost
127.0.0.1 db.example.org broker.example.org master1.example.org
# The other masters the agent lists: nothing answers there (an agent tries them only when master1 does not).
127.0.0.2 master2.example.org master3.example.org
HOSTS
    local status=0
    BUILDD_STATE_DIR=$guide/state BUILDD_AMQP_PORT=5672 BUILDD_AMQPS_PORT=5671 BUILDD_MGMT_PORT=15672 BUILDD_AMQP_DIST_PORT=25672 \
        BUILDD_EPMD_PORT=4369 GUIDE_ROOT=$root GUIDE_DIR=$guide \
        ip netns exec "$GUIDE_NS" "$ROOT/deploy/localfarm" guide-farm || status=$?
    [ $status = 0 ] || die "the guide's farm did not build its package (logs in $guide)"
    log "the deploy guide works as written"
}

# Inside the namespace: the farm of the guide. STATE, the ports and GUIDE_ROOT/GUIDE_DIR come from cmd_guide.
cmd_guide_farm() {
    local root=$GUIDE_ROOT guide=$GUIDE_DIR master agent tls=$GUIDE_DIR/tls
    master=$root/usr/bin/buildd-master
    agent=$root/usr/bin/buildd-agent
    mkdir -p "$STATE"
    trap 'stop_processes; stop_rabbitmq; guide_stop_postgres' EXIT
    getent hosts db.example.org | grep -q '^127\.0\.0\.1' || die "db.example.org does not resolve in the namespace"

    # Section 1: a scratch CA signs the database's, the broker's and the master's certificates; PostgreSQL
    # with TLS for sslmode=verify-full.
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=buildd guide CA" -keyout ca.key -out ca.pem 2>/dev/null
        for host in db broker master1; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=$host.example.org" -keyout $host.key -out $host.csr 2>/dev/null
            printf 'subjectAltName = DNS:%s.example.org\n' $host > $host.ext
            openssl x509 -req -in $host.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $host.ext \
                -out $host.pem 2>/dev/null
        done
    )
    # Where master.env and agent.conf expect them: the CA for both, the master's certificate and key.
    install -m 0644 "$tls/ca.pem" "$root/etc/buildd/ca.pem"
    install -m 0644 "$tls/master1.pem" "$root/etc/buildd/master.pem"
    install -m 0600 "$tls/master1.key" "$root/etc/buildd/master.key"
    GUIDE_PG=$(dirname "$PG_DIR")/guide-pg
    rm -rf "$GUIDE_PG"
    mkdir -p "$GUIDE_PG/sock"
    cp "$tls/db.pem" "$tls/db.key" "$GUIDE_PG/"
    chmod 0600 "$GUIDE_PG/db.key"
    chmod 0755 "$tls" && chmod 0644 "$tls/ca.pem"
    [ "$(id -u)" = 0 ] && chown -R postgres "$GUIDE_PG"
    local bin
    bin=$(pg_bin)
    as_postgres "$bin/initdb" -D "$GUIDE_PG/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
        --no-sync >/dev/null
    as_postgres "$bin/pg_ctl" -D "$GUIDE_PG/data" -l "$GUIDE_PG/postgres.log" -w -t 60 start -o \
        "-p 5432 -k $GUIDE_PG/sock -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$GUIDE_PG/db.pem -c ssl_key_file=$GUIDE_PG/db.key" \
        >/dev/null || { tail -n 20 "$GUIDE_PG/postgres.log" >&2; die "PostgreSQL did not start"; }
    local db_password broker_password agent_password
    db_password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    psql -q -h "$GUIDE_PG/sock" -p 5432 -U postgres -d postgres \
        -c "CREATE ROLE buildd LOGIN PASSWORD '$db_password';" -c "CREATE DATABASE buildd OWNER buildd;" >/dev/null
    sed -i "s|^\(BUILDD_DATABASE_URL=postgresql://buildd:\)CHANGE-ME@|\1$db_password@|" "$root/etc/buildd/master.env"
    log "guide: PostgreSQL on db.example.org:5432 with TLS, role and database buildd"

    # Section 2: RabbitMQ with an amqps listener (the broker's certificate), the definitions, the master's
    # and the agent's users.
    mkdir -p "$STATE/tls"
    cp "$tls/ca.pem" "$STATE/tls/ca.pem"
    cp "$tls/broker.pem" "$STATE/tls/server.pem"
    cp "$tls/broker.key" "$STATE/tls/server.key"
    RABBIT_TLS=1 start_rabbitmq
    rabbitmqctl_ import_definitions "$ROOT/deploy/rabbitmq/definitions.json" >/dev/null
    export BUILDD_MANAGEMENT_URL=http://guest:guest@broker.example.org:15672 BUILDD_VHOST=buildd
    broker_password=$("$ROOT/deploy/rabbitmq/add-master-user" buildd-master)
    agent_password=$("$ROOT/deploy/rabbitmq/enrol-agent" bld-amd64-01 amd64)
    sed -i "s|^\(BUILDD_BROKER_URL=amqps://buildd-master:\)CHANGE-ME@|\1$broker_password@|" "$root/etc/buildd/master.env"
    grep -q CHANGE-ME "$root/etc/buildd/master.env" && die "master.env still has a CHANGE-ME the guide does not fill"
    log "guide: RabbitMQ on broker.example.org:5671 (amqps), definitions imported, users buildd-master and bld-amd64-01"

    # Section 3: the master, by its unit's command lines and master.env (BUILDD_CONFIG: where the file is).
    export BUILDD_CONFIG=$root/etc/buildd/master.env PGSSLROOTCERT=$tls/ca.pem
    local pre start
    pre=$(sed -n 's|^ExecStartPre=/usr/bin/|'"$root"'/usr/bin/|p' "$root/etc/systemd/system/buildd-master.service")
    start=$(sed -n 's|^ExecStart=/usr/bin/|'"$root"'/usr/bin/|p' "$root/etc/systemd/system/buildd-master.service")
    $pre >"$guide/migrate.log" 2>&1 || { cat "$guide/migrate.log" >&2; die "the unit's ExecStartPre failed"; }
    # shellcheck disable=SC2086
    start_process guide-master "$guide/master.log" $start
    local tries=0
    until curl -sf --cacert "$tls/ca.pem" https://master1.example.org:8443/healthz >/dev/null; do
        tries=$((tries + 1))
        [ $tries -lt 150 ] || { tail -n 30 "$guide/master.log" >&2; die "the master did not become healthy"; }
        sleep 0.2
    done
    log "guide: master up at https://master1.example.org:8443 (from master.env: $(grep -c '^BUILDD_' "$BUILDD_CONFIG") settings)"

    # Sections 4 and 5: a processor, an arch series, the build machine's builder and its agent.
    "$master" processor add amd64
    "$master" archseries add ubuntu/noble/amd64 --processor amd64
    "$master" builder add bld-amd64-01 --processor amd64 --broker-user bld-amd64-01
    # The build machine's build user (agent.conf's build_user): builds never run as the agent.
    id buildd-build >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin buildd-build
    printf '%s\n' "$agent_password" > "$root/etc/buildd/agent.secret"
    chmod 0600 "$root/etc/buildd/agent.secret"
    pre=$(sed -n 's|^ExecStartPre=/usr/bin/|'"$root"'/usr/bin/|p; ' "$root/etc/systemd/system/buildd-agent.service" \
        | sed "s| /etc/buildd/| $root/etc/buildd/|g")
    start=$(sed -n 's|^ExecStart=/usr/bin/|'"$root"'/usr/bin/|p' "$root/etc/systemd/system/buildd-agent.service" \
        | sed "s| /etc/buildd/| $root/etc/buildd/|g")
    $pre || die "the agent unit's ExecStartPre (check-config) refused the example configuration"
    # shellcheck disable=SC2086
    start_process guide-agent "$guide/agent.log" $start

    # A build, with a source file through the artifact store master.env names.
    local source=$guide/hello_2.10-3.dsc id status
    printf 'Format: 3.0 (quilt)\nSource: hello\nVersion: 2.10-3\n' > "$source"
    id=$("$master" build submit ubuntu/noble/amd64 hello 2.10-3 --source-file "$source")
    log "guide: submitted build $id"
    local deadline=$((SECONDS + 120))
    while true; do
        status=$("$master" build show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build"]["status"])')
        [ "$status" = FULLYBUILT ] && break
        case "$status" in NEEDSBUILD|BUILDING|GATHERING|UPLOADING) ;; *)
            "$master" build show "$id" >&2; tail -n 20 "$guide/agent.log" "$guide/master.log" >&2
            die "build $id ended $status" ;;
        esac
        [ $SECONDS -lt $deadline ] || { tail -n 20 "$guide/agent.log" "$guide/master.log" >&2; die "build $id is still $status"; }
        sleep 0.5
    done
    "$master" build show "$id"
    local deb
    deb=$("$master" build show "$id" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next(f["name"] for f in d["files"] if f["name"].endswith(".deb")))')
    curl -sf --cacert "$tls/ca.pem" "https://master1.example.org:8443/v1/builds/$id/files/$deb" | grep -q '^Package: hello' \
        || die "the built package cannot be downloaded from the master"
    log "guide: build $id FULLYBUILT on bld-amd64-01; $deb downloaded from master1.example.org"
}

guide_stop_postgres() {
    [ -n "${GUIDE_PG:-}" ] && [ -f "$GUIDE_PG/data/PG_VERSION" ] || return 0
    as_postgres "$(pg_bin)/pg_ctl" -D "$GUIDE_PG/data" -m fast -w stop >/dev/null 2>&1 || true
}
