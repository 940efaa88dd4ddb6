# Sourced by deploy/localfarm: the `fuzz` command. Builds Fuzz/ (libFuzzer targets for the agent-event
# decoder, the XML-RPC parser and the agent's configuration parser) with -sanitize=fuzzer and runs each
# for RUNS executions (default 1,000,000) from the seed corpus in Fuzz/corpus/, with SEED for libFuzzer
# (default 1, so a run can be repeated). New inputs go to .localfarm/fuzz/, crashes to
# .localfarm/fuzz/crashes/; prints a table of executions and speed, exits 1 on the first crash.

cmd_fuzz() {
    local runs="${1:-1000000}" seed="${2:-1}"
    install_missing
    cd "$ROOT/Fuzz"
    log "building the fuzz targets (release, -sanitize=fuzzer)"
    mkdir -p "$STATE/fuzz/crashes"
    swift build -c release --sanitize=fuzzer > "$STATE/fuzz/build.log" 2>&1 \
        || die "the fuzz build failed: see $STATE/fuzz/build.log"
    local bin status=0 target corpus out="$STATE/fuzz/results.txt"
    bin=$(swift build -c release --sanitize=fuzzer --show-bin-path)
    printf '%-20s %12s %10s %8s  %s\n' TARGET EXECUTIONS PER-SEC SECONDS RESULT | tee "$out"
    for target in event-decoder:event xmlrpc:xmlrpc agent-config:config; do
        corpus=${target#*:}
        target=${target%%:*}
        mkdir -p "$STATE/fuzz/$corpus"
        local started ended result log="$STATE/fuzz/$target.log"
        started=$(date +%s)
        # libFuzzer, not the Swift runtime's backtracer, must see a crash: it saves the input to crashes/.
        if SWIFT_BACKTRACE=enable=no "$bin/fuzz-$target" "$STATE/fuzz/$corpus" "$ROOT/Fuzz/corpus/$corpus" -runs="$runs" -seed="$seed" \
            -max_len=16384 -print_final_stats=1 -artifact_prefix="$STATE/fuzz/crashes/$target-" > "$log" 2>&1; then
            result=ok
        else
            result="CRASH (see $log)"
            status=1
        fi
        ended=$(date +%s)
        printf '%-20s %12s %10s %8s  %s\n' "$target" \
            "$(awk '/stat::number_of_executed_units/ {print $2}' "$log")" \
            "$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")" "$((ended - started))" "$result" | tee -a "$out"
    done
    log "figures written to $out"
    return $status
}
