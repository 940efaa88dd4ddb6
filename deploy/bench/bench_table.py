#!/usr/bin/env python3
"""Renders the JSON lines of `deploy/localfarm bench` as the README's Performance table (Markdown)."""
import json
import os
import platform
import subprocess
import sys


def main(path):
    runs = {}
    depths = []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record["bench"] == "depth":
            depths.append(record)
        else:
            runs[record["bench"]] = record

    def get(bench, key, fmt="%.2f"):
        value = runs.get(bench, {}).get(key)
        return "n/a" if value is None else fmt % value

    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    print("Measured %s on %s, %d cores (%s), %s; fsync on; release builds; one run (read the figures as ratios)."
          % (subprocess.run(["date", "-u", "+%Y-%m-%d"], capture_output=True, text=True).stdout.strip(),
             platform.platform(terse=True), os.cpu_count(), cpu,
             subprocess.run(["sh", "-c", "swift --version 2>/dev/null | head -n 1"], capture_output=True,
                            text=True).stdout.strip() or "Swift"))
    print()
    print("| what | buildd | goal | alongside |")
    print("|---|---|---|---|")
    print("| dispatch latency p50 / p99: submit committed -> job in an idle agent's hands | %s / %s ms | < 3 / < 10 ms "
          "| floor: one durable commit %s / %s ms + one confirmed publish %s / %s ms |"
          % (get("dispatch", "p50_ms"), get("dispatch", "p99_ms"), get("postgres-floor", "commit_p50_ms"),
             get("postgres-floor", "commit_p99_ms"), get("broker-floor", "confirm_p50_ms"),
             get("broker-floor", "confirm_p99_ms")))
    print("| Celery %s: apply_async -> task starts, idle worker, p50 / p99 | | | %s / %s ms (no durable state, no confirms) |"
          % (runs.get("celery", {}).get("version", ""), get("celery", "p50_ms"), get("celery", "p99_ms")))
    print("| broker floor: publish (confirmed) -> consumer has it, p50 / p99 | | | %s / %s ms |"
          % (get("broker-floor", "roundtrip_p50_ms"), get("broker-floor", "roundtrip_p99_ms")))
    print("| throughput, one master: durable no-op builds/s (claim, job, accepted, finished) | %s | >= 3,000; > Celery "
          "| Celery best drain %s tasks/s |"
          % (get("throughput-1", "builds_per_s", "%.0f"), get("celery", "best_drain_per_s", "%.0f")))
    one = runs.get("throughput-1", {}).get("builds_per_s")
    celery = runs.get("celery", {}).get("best_drain_per_s")
    if one and celery:
        print("| throughput, one master / Celery's best drain, same run | %.2f | >= 1 | |" % (one / celery))
    durable = runs.get("celery", {}).get("drain_per_s_durable")
    if durable:
        print("| Celery with a build's durability (publisher confirms, acks_late, task_track_started, results in "
              "PostgreSQL with fsync on), prefork 2: tasks/s | | | %.0f (%s results stored) |"
              % (durable, runs["celery"].get("durable_results_stored", "?")))
        if one:
            print("| throughput, one master / that Celery, same run | %.2f | > 1 | |" % (one / durable))
    print("| throughput, two masters | %s | about 2x one master on separate machines | %s x one master |"
          % (get("throughput-2", "builds_per_s", "%.0f"),
             ("%.2f" % (runs["throughput-2"]["builds_per_s"] / one)) if one and "throughput-2" in runs else "-"))
    for label, title in (("throughput-1", "one master"), ("throughput-2", "two masters")):
        run = runs.get(label, {})
        if "pg_ms_per_build" in run:
            print("| PostgreSQL time per build (pg_stat_statements), %s | %.3f ms | <= 0.6 ms | |"
                  % (title, run["pg_ms_per_build"]))
        parts = [(key[len("cpu_ms_per_build_"):], value) for key, value in sorted(run.items())
                 if key.startswith("cpu_ms_per_build_")]
        if parts:
            print("| CPU per build, %s (ms): %s | | | the limit is the largest share of 2 cores |"
                  % (title, ", ".join("%s %.3f" % part for part in parts)))
    print("| floors for throughput | | | PostgreSQL %s commits/s on 1 connection, %s on 8; broker %s msg/s published "
          "(confirmed) and consumed |"
          % (get("postgres-floor", "commits_per_s_1", "%.0f"), get("postgres-floor", "commits_per_s_n", "%.0f"),
             get("broker-floor", "through_per_s", "%.0f")))
    base = None
    for record in depths:
        waiting = record["waiting"]
        label = "%s waiting" % format(int(round(waiting, -2)), ",")
        if base is None:
            base = record["p50_ms"]
        ratio = record["p50_ms"] / base if base else 0
        print("| turnaround p50 / p99 with %s builds: finished sent -> next best build in hand | %.2f / %.2f ms "
              "| within 2x of 1,000 | %.2fx the first |" % (label, record["p50_ms"], record["p99_ms"], ratio))
    fleet = runs.get("fleet")
    if fleet:
        print("| one master, %s idle builders heartbeating every 10 s: RSS (peak) | %.0f MiB (%.0f MiB) | | before: %s MiB; "
              "all hellos applied in %.1f s (%.0f events/s); builders gone stale: %d |"
              % (format(int(fleet["builders"]), ","), fleet.get("master_rss_mib", 0), fleet.get("master_hwm_mib", 0),
                 get("master-before-fleet", "rss_mib", "%.0f"), fleet["hello_seconds"], fleet["events_per_s_hello"],
                 fleet["stale_builders"]))
    print("| agent idle RSS (release, static Swift stdlib) | %s MiB | | |" % get("agent", "rss_mib", "%.1f"))


if __name__ == "__main__":
    main(sys.argv[1])
