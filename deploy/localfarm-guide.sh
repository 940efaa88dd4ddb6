# deploy/localfarm guide: docs/deploy.md executed from the Debian packages (sourced by deploy/localfarm,
# after deploy/localfarm-packages.sh).
#
# 1. Builds the packages twice (`deploy/localfarm packages`): the release, and the same release numbered
#    one step lower (VERSION~guide1), which is installed first so that the run upgrades to the release.
# 2. Makes a fresh Debian root with mmdebstrap (bookworm, minbase, with the packages' dependencies and
#    systemd, made once per checkout and unpacked afresh each run) and lists its files; `dpkg -i` installs
#    both packages into it, and their maintainer scripts must leave neither daemon started: master.env still
#    holds CHANGE-ME and no agent.conf exists. Checks the installed files (deploy/guide_check.py: systemd-analyze
#    verify, every command's flags against --help, master.env against what the master reads) and the users,
#    folders and modes the postinsts made.
# 3. Makes a network namespace whose /etc/hosts (ip netns' /etc/netns/NAME/hosts, and the root's own) resolves
#    the guide's host names - db.example.org, broker.example.org, master1.example.org - to its loopback, so the
#    farm runs on the guide's names and default ports (5432, 5671, 15672, 8443) without touching this machine's.
# 4. In it, follows the guide with the installed files, every buildd command run in the root (`chroot`, the
#    master as its user buildd): one scratch CA signs db, broker and master1; PostgreSQL with TLS and the role
#    and database of section 1; RabbitMQ with amqps on 5671, the definitions, the master's user and the
#    enrolling user; master.env filled in; the master by its unit's command lines (check-config, migrate,
#    serve); `processor add`, `archseries add`; a join token, `buildd-agent enrol` and the agent by its unit's
#    command lines; a build with a source file to FULLYBUILT and its .deb downloaded over HTTPS. Then, with the
#    farm running, `dpkg -i` upgrades both packages: the filled-in master.env must be kept as it is, the
#    daemons restart (as the postinst does under systemd) and a second build must end FULLYBUILT.
# 5. Stops the farm, `dpkg --purge`s both packages and compares the root's files with the list made before
#    the install: nothing may remain but dpkg's own records and logs and the three files the guide had the
#    operator put in /etc/buildd (the CA, the master's certificate and key); no user buildd or buildd-build.
#
# What it leaves out: a second and third master and broker node (the cluster issue's run), and systemd
# itself: the root has no running init, so the unit's command lines are run as the unit says.

GUIDE_NS=buildd-guide

guide_cleanup() {
    local pid
    for pid in $(ip netns pids "$GUIDE_NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$GUIDE_NS" 2>/dev/null || true
    rm -rf "/etc/netns/$GUIDE_NS"
    if [ -n "${GUIDE_ROOT_DIR:-}" ] && mountpoint -q "$GUIDE_ROOT_DIR/proc" 2>/dev/null; then
        umount -l "$GUIDE_ROOT_DIR/proc" || true
    fi
}

# The root's file list: every path with its type, mode and owner (not times: dpkg and logs change those).
guide_file_list() {
    (cd "$1" && find . -xdev \( -path ./proc -o -path ./tmp -o -path ./var/lib/dpkg -o -path ./var/log \
        -o -path ./var/cache -o -path ./var/lib/apt -o -path ./run \) -prune -o -printf '%y %m %U:%G %p\n') | sort
}

# Runs a command in the root as an administrator's shell there would: a clean environment (this script's
# BUILDD_CONFIG=/dev/null and the rest stay outside). `guide_in_root ROOT [--userspec=U:G] COMMAND...`
GUIDE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
guide_in_root() {
    local root=$1; shift
    local spec=()
    case "${1:-}" in --userspec=*) spec=("$1"); shift ;; esac
    chroot "${spec[@]}" "$root" /usr/bin/env -i PATH=$GUIDE_PATH LANG=C.UTF-8 "$@"
}

GUIDE_DEPENDS=adduser,init-system-helpers,systemd,libpq5,librabbitmq4,libssl3,libgcc-s1,libstdc++6,zstd

cmd_guide() {
    [ "$(id -u)" = 0 ] || die "the guide run makes a root and a network namespace: run it as root"
    install_missing
    command -v ip >/dev/null || apt_install iproute2
    command -v mmdebstrap >/dev/null || apt_install mmdebstrap zstd
    cd "$ROOT"
    local guide=$STATE/guide
    local root=$guide/root
    GUIDE_ROOT_DIR=$root
    guide_cleanup
    rm -rf "$guide"
    mkdir -p "$guide"
    trap guide_cleanup EXIT

    # 1. The packages: the release, and the same numbered one step lower to upgrade from.
    local debs new_master new_agent old_master old_agent version
    debs=$(cmd_packages --out "$guide/debs")
    new_master=$(echo "$debs" | grep buildd-master_)
    new_agent=$(echo "$debs" | grep buildd-agent_)
    version=$(release_version)
    debs=$(cmd_packages --version "$version~guide1" --out "$guide/debs-old")
    old_master=$(echo "$debs" | grep buildd-master_)
    old_agent=$(echo "$debs" | grep buildd-agent_)

    # 2. A fresh root.
    local base=$STATE/chroots/guide-bookworm-minbase.tar.zst
    if [ ! -f "$base" ]; then
        log "making the guide's Debian root with mmdebstrap (minbase and $GUIDE_DEPENDS; about a minute)"
        mkdir -p "$STATE/chroots"
        mmdebstrap --quiet --variant=minbase --include="$GUIDE_DEPENDS" bookworm "$base.part.tar.zst" "$(debian_archive)" >&2 \
            || { rm -rf "$base.part.tar.zst"; die "mmdebstrap failed"; }
        mv "$base.part.tar.zst" "$base"
    fi
    mkdir -p "$root"
    tar --zstd -xpf "$base" -C "$root"
    guide_file_list "$root" > "$guide/files-before"
    [ ! -e "$root/etc/hosts" ] || cp -p "$root/etc/hosts" "$guide/hosts-before"
    # Swift programs read their arguments from /proc/self/cmdline: the root needs /proc as any system has it.
    mount -t proc proc "$root/proc"
    mkdir -p "$root/tmp/debs"
    cp "$old_master" "$old_agent" "$root/tmp/debs/"
    log "installing $(basename "$old_master") and $(basename "$old_agent") with dpkg -i"
    guide_in_root "$root" dpkg -i "/tmp/debs/$(basename "$old_master")" "/tmp/debs/$(basename "$old_agent")" \
        > "$guide/install.log" 2>&1 || { cat "$guide/install.log" >&2; die "the packages did not install"; }
    grep -q "buildd-master: not started: /etc/buildd/master.env is not complete" "$guide/install.log" \
        || { cat "$guide/install.log" >&2; die "the master's postinst did not refuse the shipped placeholders"; }
    grep -q "buildd-agent: not started: enrol this machine first" "$guide/install.log" \
        || { cat "$guide/install.log" >&2; die "the agent's postinst did not wait for its enrolment"; }
    [ ! -e "$root/etc/systemd/system/multi-user.target.wants/buildd-master.service" ] \
        || die "the master's unit was enabled with an incomplete master.env"
    local check
    check=$(guide_in_root "$root" buildd-master check-config 2>&1) && die "check-config passed the shipped master.env"
    echo "$check" | grep -q CHANGE-ME || die "check-config did not name the placeholders: $check"
    local mode
    for mode in "/etc/buildd/master.env root:buildd 640" "/var/lib/buildd/artifacts buildd:buildd 750" \
                "/var/lib/buildd-agent root:root 700" "/etc/buildd root:buildd 750"; do
        set -- $mode
        [ "$(guide_in_root "$root" stat -c '%U:%G %a' "$1")" = "$2 $3" ] \
            || die "$1 is $(guide_in_root "$root" stat -c '%U:%G %a' "$1"), not $2 $3"
    done
    guide_in_root "$root" getent passwd buildd-build | grep -q nologin || die "no build user buildd-build"
    log "installed: users buildd and buildd-build, folders and modes as the packages say; neither daemon started"

    log "checking the installed files"
    python3 deploy/guide_check.py "$root" "$ROOT" || die "the shipped files do not agree with the binaries"

    # 3. The guide's host names, in a namespace of their own.
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
    cp "/etc/netns/$GUIDE_NS/hosts" "$root/etc/hosts"
    cp "$new_master" "$new_agent" "$root/tmp/debs/"

    # 4. The guide's farm, from the installed files.
    local status=0
    BUILDD_STATE_DIR=$guide/state BUILDD_AMQP_PORT=5672 BUILDD_AMQPS_PORT=5671 BUILDD_MGMT_PORT=15672 BUILDD_AMQP_DIST_PORT=25672 \
        BUILDD_EPMD_PORT=4369 GUIDE_ROOT=$root GUIDE_DIR=$guide GUIDE_NEW_DEBS="/tmp/debs/$(basename "$new_master") /tmp/debs/$(basename "$new_agent")" \
        ip netns exec "$GUIDE_NS" "$ROOT/deploy/localfarm" guide-farm || status=$?
    [ $status = 0 ] || die "the guide's farm did not build its packages (logs in $guide)"

    # 5. Purge, and nothing may remain.
    umount "$root/proc"
    if [ -e "$guide/hosts-before" ]; then cp -p "$guide/hosts-before" "$root/etc/hosts"; else rm -f "$root/etc/hosts"; fi
    rm -rf "$root/tmp/debs"
    log "purging both packages"
    guide_in_root "$root" dpkg --purge buildd-agent buildd-master > "$guide/purge.log" 2>&1 \
        || { cat "$guide/purge.log" >&2; die "dpkg --purge failed"; }
    guide_file_list "$root" > "$guide/files-after"
    local left
    left=$(diff "$guide/files-before" "$guide/files-after" | grep '^[<>]' \
        | grep -Ev '^> f [0-9]+ 0:0 \./etc/buildd/(ca\.pem|master\.pem|master\.key)$|^> d [0-9]+ 0:0 \./etc/buildd$' \
        | grep -Ev '^[<>] f [0-9]+ 0:[0-9]+ \./etc/(passwd|group|shadow|gshadow)-$' || true)
    [ -z "$left" ] || { echo "$left" >&2; die "the purge left these behind (> new, < gone)"; }
    if grep -E '^(buildd|buildd-build):' "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"; then
        die "the purge left a user or group"
    fi
    for file in passwd group shadow gshadow; do
        cmp -s "$root/etc/$file" <(tar --zstd -xOf "$base" "./etc/$file") || die "/etc/$file differs from before the install"
    done
    log "purged: nothing left but the CA and the master's certificate and key the operator put in /etc/buildd"
    log "the deploy guide works as written, from apt's packages to their purge"
}

# Inside the namespace: the farm of the guide. STATE, the ports, GUIDE_ROOT, GUIDE_DIR and GUIDE_NEW_DEBS come
# from cmd_guide. Every buildd command runs in the root, as the unit or the guide says.
cmd_guide_farm() {
    local root=$GUIDE_ROOT guide=$GUIDE_DIR tls=$GUIDE_DIR/tls
    in_root() { guide_in_root "$root" "$@"; }
    as_buildd() { guide_in_root "$root" --userspec=buildd:buildd "$@"; }
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
    # Where master.env and agent.conf expect them, as the guide says: the CA for everyone, the master's
    # certificate, and its key readable by the buildd group only.
    install -m 0644 "$tls/ca.pem" "$root/etc/buildd/ca.pem"
    install -m 0644 "$tls/master1.pem" "$root/etc/buildd/master.pem"
    install -m 0640 "$tls/master1.key" "$root/etc/buildd/master.key"
    in_root chgrp buildd /etc/buildd/master.key
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
    local db_password broker_password enrol_password env=$root/etc/buildd/master.env
    db_password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    psql -q -h "$GUIDE_PG/sock" -p 5432 -U postgres -d postgres \
        -c "CREATE ROLE buildd LOGIN PASSWORD '$db_password';" -c "CREATE DATABASE buildd OWNER buildd;" >/dev/null
    sed -i "s|^\(BUILDD_DATABASE_URL=postgresql://buildd:\)CHANGE-ME@|\1$db_password@|" "$env"
    log "guide: PostgreSQL on db.example.org:5432 with TLS, role and database buildd"

    # Section 2: RabbitMQ with an amqps listener (the broker's certificate), the definitions, the master's
    # user (the installed script) and the user masters enrol machines with.
    mkdir -p "$STATE/tls"
    cp "$tls/ca.pem" "$STATE/tls/ca.pem"
    cp "$tls/broker.pem" "$STATE/tls/server.pem"
    cp "$tls/broker.key" "$STATE/tls/server.key"
    RABBIT_TLS=1 start_rabbitmq
    local examples=$root/usr/share/doc/buildd-master/examples
    rabbitmqctl_ import_definitions "$examples/definitions.json" >/dev/null
    export BUILDD_MANAGEMENT_URL=http://guest:guest@broker.example.org:15672 BUILDD_VHOST=buildd
    broker_password=$("$examples/add-master-user" buildd-master)
    enrol_password=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
    curl -sf -u guest:guest -X PUT -H 'content-type: application/json' \
        --data "{\"password\":\"$enrol_password\",\"tags\":\"administrator\"}" \
        http://broker.example.org:15672/api/users/buildd-enrol >/dev/null || die "could not make the user buildd-enrol"
    sed -i -e "s|^\(BUILDD_BROKER_URL=amqps://buildd-master:\)CHANGE-ME@|\1$broker_password@|" \
        -e "s|^\(BUILDD_BROKER_MANAGEMENT_URL=http://buildd-enrol:\)CHANGE-ME@|\1$enrol_password@|" "$env"
    grep -q CHANGE-ME "$env" && die "master.env still has a CHANGE-ME the guide does not fill"
    in_root buildd-master check-config >/dev/null || die "check-config refused the filled-in master.env"
    log "guide: RabbitMQ on broker.example.org:5671 (amqps), definitions imported, users buildd-master and buildd-enrol"

    # Section 3: the master, by its unit's command lines, as its user (it reads /etc/buildd/master.env).
    local master_unit=$root/lib/systemd/system/buildd-master.service agent_unit=$root/lib/systemd/system/buildd-agent.service line
    guide_start_master() {
        while read -r line; do
            # shellcheck disable=SC2086
            as_buildd $line >>"$guide/master-pre.log" 2>&1 || { cat "$guide/master-pre.log" >&2; die "the unit's ExecStartPre $line failed"; }
        done < <(sed -n 's|^ExecStartPre=||p' "$master_unit")
        # shellcheck disable=SC2046
        start_process guide-master "$guide/master.log" chroot --userspec=buildd:buildd "$root" /usr/bin/env -i \
            PATH=$GUIDE_PATH LANG=C.UTF-8 $(sed -n 's|^ExecStart=||p' "$master_unit")
        local tries=0
        until curl -sf --cacert "$tls/ca.pem" https://master1.example.org:8443/healthz >/dev/null; do
            tries=$((tries + 1))
            [ $tries -lt 150 ] || { tail -n 30 "$guide/master.log" >&2; die "the master did not become healthy"; }
            sleep 0.2
        done
    }
    guide_start_master
    log "guide: master $(in_root buildd-master --version) up at https://master1.example.org:8443 (from master.env: $(grep -c '^BUILDD_' "$env") settings)"

    # Sections 4 and 5: a processor, an arch series, and a build machine that enrols itself with a join token.
    in_root buildd-master processor add amd64
    in_root buildd-master archseries add ubuntu/noble/amd64 --processor amd64
    local join
    join=$(in_root buildd-master token add rack-1 --role enrol --expires 1h --processor amd64)
    in_root buildd-agent enrol --master https://master1.example.org:8443 --join-token "$join" --name bld-amd64-01 \
        --ca-file /etc/buildd/ca.pem --command binarypackage=/usr/share/buildd/sample-build \
        || die "buildd-agent enrol failed"
    [ "$(in_root stat -c '%U %a' /etc/buildd/agent.secret /etc/buildd/agent.conf | sort -u)" = "root 600" ] \
        || die "enrol wrote the agent's files with other modes: $(in_root stat -c '%n %U %a' /etc/buildd/agent.secret /etc/buildd/agent.conf)"
    guide_start_agent() {
        local options=""
        # EnvironmentFile=-/etc/default/buildd-agent
        options=$(. "$root/etc/default/buildd-agent"; echo "${BUILDD_AGENT_OPTIONS:-}")
        # shellcheck disable=SC2046
        in_root $(sed -n 's|^ExecStartPre=||p' "$agent_unit") || die "the agent unit's ExecStartPre (check-config) refused enrol's configuration"
        # shellcheck disable=SC2046,SC2086
        start_process guide-agent "$guide/agent.log" chroot "$root" /usr/bin/env -i PATH=$GUIDE_PATH LANG=C.UTF-8 $(sed -n 's|^ExecStart=||p' "$agent_unit" | sed 's| \$BUILDD_AGENT_OPTIONS||') $options
    }
    guide_start_agent

    # A build, with a source file through the artifact store master.env names.
    guide_build() {
        local source=/tmp/hello_$1.dsc id status deadline=$((SECONDS + 120))
        printf 'Format: 3.0 (quilt)\nSource: hello\nVersion: %s\n' "$1" > "$root$source"
        id=$(in_root buildd-master build submit ubuntu/noble/amd64 hello "$1" --source-file "$source")
        log "guide: submitted build $id (hello $1)"
        while true; do
            status=$(in_root buildd-master build show "$id" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["build"]["status"])')
            [ "$status" = FULLYBUILT ] && break
            case "$status" in NEEDSBUILD|BUILDING|GATHERING|UPLOADING) ;; *)
                in_root buildd-master build show "$id" >&2; tail -n 20 "$guide/agent.log" "$guide/master.log" >&2
                die "build $id ended $status" ;;
            esac
            [ $SECONDS -lt $deadline ] || { tail -n 20 "$guide/agent.log" "$guide/master.log" >&2; die "build $id is still $status"; }
            sleep 0.5
        done
        local deb
        deb=$(in_root buildd-master build show "$id" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next(f["name"] for f in d["files"] if f["name"].endswith(".deb")))')
        curl -sf --cacert "$tls/ca.pem" "https://master1.example.org:8443/v1/builds/$id/files/$deb" | grep -q '^Package: hello' \
            || die "the built package cannot be downloaded from the master"
        log "guide: build $id FULLYBUILT on bld-amd64-01; $deb downloaded from master1.example.org"
    }
    guide_build 2.10-3

    # The upgrade, with the farm running: dpkg keeps the filled-in master.env, then the daemons restart as the
    # postinst restarts them under systemd, and the farm builds again.
    local before
    before=$(in_root sha256sum /etc/buildd/master.env /etc/buildd/agent.conf /etc/buildd/agent.secret)
    # shellcheck disable=SC2086
    in_root dpkg -i $GUIDE_NEW_DEBS > "$guide/upgrade.log" 2>&1 || { cat "$guide/upgrade.log" >&2; die "the upgrade failed"; }
    [ "$(in_root sha256sum /etc/buildd/master.env /etc/buildd/agent.conf /etc/buildd/agent.secret)" = "$before" ] \
        || die "the upgrade changed the operator's configuration"
    in_root dpkg-query -W -f '${Package} ${Version}\n' buildd-master buildd-agent | grep -vq '~guide1' \
        || die "the packages were not upgraded"
    log "guide: upgraded to $(in_root dpkg-query -W -f '${Version}' buildd-master) with the farm running; configuration kept"
    stop_processes
    guide_start_master
    guide_start_agent
    guide_build 2.10-4
    stop_processes
}

guide_stop_postgres() {
    [ -n "${GUIDE_PG:-}" ] && [ -f "$GUIDE_PG/data/PG_VERSION" ] || return 0
    as_postgres "$(pg_bin)/pg_ctl" -D "$GUIDE_PG/data" -m fast -w stop >/dev/null 2>&1 || true
}
