# deploy/localfarm mixed: rolling upgrades under fire (sourced by deploy/localfarm, after localfarm-chaos.sh).
#
#   deploy/localfarm mixed [BUILDS] [MINUTES]
#
# The previous release (the newest in deploy/releases.tsv older than the checkout's BuilddRelease.version, by
# its tag, else by the commit the file names) is built in a worktree of its own, once per commit. The
# fault-injection run (deploy/localfarm chaos) then starts every master and agent on that release, on a
# database it migrated, and while BUILDS builds (default 1,000) run and masters, agents, the broker and the
# database are killed as in `chaos`, upgrades one machine at a time to the checkout's binaries, masters and
# agents in turn (BUILDD_CHAOS_UPGRADE_EVERY seconds apart, default 4): a SIGTERM and a start with the new
# binaries, as a package upgrade does; the first master upgraded runs the new release's `migrate` first,
# with the old masters serving on. Masters of the old release restarted by the faults start on the new schema.
# The checker fails unless nothing was lost, nothing completed twice, no builder ran two builds at once, and
# every machine was upgraded; the builders' last hellos show the releases.

# previous_release: prints "VERSION COMMIT" of the release before the checkout's.
previous_release() {
    local current version commit line
    current=$(sed -n 's/.*public static let version = "\([^"]*\)".*/\1/p' "$ROOT/Sources/Shared/BuilddShared/Release.swift")
    line=$(grep -v '^#' "$ROOT/deploy/releases.tsv" | awk -v current="$current" '$1 != current' \
        | sort -V -k1,1 | awk -v current="$current" '{ cmd = "dpkg --compare-versions " $1 " lt " current; if (system(cmd) == 0) last = $0 } END { print last }')
    [ -n "$line" ] || die "no release older than $current in deploy/releases.tsv"
    version=$(echo "$line" | cut -f1)
    commit=$(git -C "$ROOT" rev-parse -q --verify "refs/tags/v$version^{commit}" 2>/dev/null || echo "$line" | cut -f2)
    if ! git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null; then
        git -C "$ROOT" fetch -q --tags origin 2>/dev/null || true
        git -C "$ROOT" cat-file -e "$commit^{commit}" 2>/dev/null \
            || die "the release $version ($commit) is not in this clone: fetch its tag v$version"
    fi
    echo "$version $commit"
}

cmd_mixed() {
    local builds=${1:-1000} minutes=${2:-20} version commit previous
    read -r version commit < <(previous_release)
    previous=$STATE/releases/$version-${commit:0:12}
    if [ ! -x "$previous/bin/buildd-master" ] || [ ! -x "$previous/bin/buildd-agent" ]; then
        log "building the previous release $version ($commit) in a worktree of its own (once per commit)"
        rm -rf "$previous"
        git -C "$ROOT" worktree prune
        git -C "$ROOT" worktree add -q --detach "$previous/src" "$commit"
        local product
        for product in buildd-master buildd-agent; do
            (cd "$previous/src" && swift build --product "$product" 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\] ' | grep -E 'error' >&2) || true
        done
        mkdir -p "$previous/bin"
        local bin
        bin=$(cd "$previous/src" && swift build --show-bin-path)
        cp "$bin/buildd-master" "$bin/buildd-agent" "$previous/bin/" || die "the previous release did not build"
    fi
    export CHAOS_BIN_OLD=$previous/bin CHAOS_UPGRADE_EVERY=${BUILDD_CHAOS_UPGRADE_EVERY:-4} CHAOS=$STATE/mixed
    export BUILDD_CHAOS_AGENTS=${BUILDD_CHAOS_AGENTS:-6}
    log "mixed run: $("$CHAOS_BIN_OLD/buildd-master" --version) upgraded to the checkout's release under faults"
    cmd_chaos "$builds" "$minutes"
}
