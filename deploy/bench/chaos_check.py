#!/usr/bin/env python3
"""The checker of the fault-injection run (`deploy/localfarm chaos`).

Reads the run's database (through psql), the builders' journal (written by deploy/bench/chaos-build)
and the fault log, and prints:

  builds lost               queued builds that did not end (FULLYBUILT, or FAILEDTOBUILD after three
                            infrastructure failures), or ended FULLYBUILT without their result file
  builds completed twice    builds with more than one accepted completion in their history
  builders running two      build commands that found their builder's lock taken (a builder asked to
                            run a second build while one ran), plus any builder the database shows
                            with two running builds
  longest stall             the longest time in which no build ended while builds remained

Exit status 0 when the first three are all 0 and every kind of fault was injected at least once.
"""
import argparse
import collections
import subprocess
import sys

TERMINAL = ("FULLYBUILT", "FAILEDTOBUILD", "MANUALDEPWAIT", "CHROOTWAIT", "SUPERSEDED", "FAILEDTOUPLOAD", "CANCELLED")


def query(database, sql):
    out = subprocess.run(["psql", "-qAtX", "-F", "\t", database, "-c", sql], check=True, capture_output=True, text=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def main():
    parser = argparse.ArgumentParser(description="Check a fault-injection run.")
    parser.add_argument("--dir", required=True, help="the run's folder (journal, faults.log)")
    parser.add_argument("--database", required=True, help="PostgreSQL URL of the run's database")
    parser.add_argument("--builds", type=int, required=True, help="builds queued")
    args = parser.parse_args()

    statuses = dict((s, int(n)) for s, n in query(args.database, """
        SELECT status, count(*) FROM build WHERE source_name = 'chaos' GROUP BY status"""))
    queued = sum(statuses.values())
    ended = sum(n for s, n in statuses.items() if s in ("FULLYBUILT", "FAILEDTOBUILD"))
    unfinished = queued - ended
    without_files = int(query(args.database, """
        SELECT count(*) FROM build b WHERE b.source_name = 'chaos' AND b.status = 'FULLYBUILT'
           AND NOT EXISTS (SELECT 1 FROM build_file f WHERE f.build_id = b.id AND f.attempt = b.attempt
                              AND f.kind = 'result')""")[0][0])
    lost = (args.builds - queued) + unfinished + without_files
    twice = int(query(args.database, """
        SELECT count(*) FROM (SELECT e.build_id FROM build_event e JOIN build b ON b.id = e.build_id
                               WHERE b.source_name = 'chaos' AND e.status IN %s
                               GROUP BY e.build_id HAVING count(*) > 1) x""" % (TERMINAL,))[0][0])
    db_overlaps = int(query(args.database, """
        SELECT count(*) FROM (SELECT builder_id FROM buildqueue WHERE state IN ('RUNNING', 'CANCELLING')
                               GROUP BY builder_id HAVING count(*) > 1) x""")[0][0])

    starts = collections.Counter()
    overlaps = []
    with open(args.dir + "/journal") as journal:
        for line in journal:
            kind, builder, build, attempt, _ = line.split()
            if kind == "start":
                starts[build] += 1
            elif kind == "overlap":
                overlaps.append((builder, build, attempt))
    rerun = sum(1 for n in starts.values() if n > 1)

    faults = []
    with open(args.dir + "/faults.log") as log:
        for line in log:
            at, what = line.rstrip("\n").split(" ", 1)
            faults.append((float(at), what))
    begin = faults[0][0]
    end = faults[-1][0]
    finished = sorted(float(r[0]) for r in query(args.database, """
        SELECT extract(epoch FROM date_finished) FROM build
         WHERE source_name = 'chaos' AND date_finished IS NOT NULL ORDER BY 1"""))
    marks = [begin] + [t for t in finished if begin <= t <= end] + ([end] if unfinished else [])
    stall, stall_at = 0.0, begin
    for a, b in zip(marks, marks[1:]):
        if b - a > stall:
            stall, stall_at = b - a, a
    cause = [what for at, what in faults if at <= stall_at + 0.001 and what not in ("end",)]

    def recovery(marker):
        # From the moment a restarted service was back to the next build that ended.
        worst = None
        for at, what in faults:
            if what == marker:
                following = [t for t in finished if t >= at]
                if following:
                    worst = max(worst or 0.0, following[0] - at)
        return "-" if worst is None else "%.1f" % worst
    counts = collections.Counter(what.split(" ")[0] + " " + what.split(" ")[1] for _, what in faults
                                 if what.startswith(("kill", "restart", "crash")))
    failed = statuses.get("FAILEDTOBUILD", 0)
    infra = int(query(args.database, """
        SELECT count(*) FROM build_event e JOIN build b ON b.id = e.build_id
         WHERE b.source_name = 'chaos' AND e.message LIKE 'retrying:%'""")[0][0])

    rows = [
        ("builds queued", args.builds),
        ("builds ended FULLYBUILT", statuses.get("FULLYBUILT", 0)),
        ("builds ended FAILEDTOBUILD (3 infrastructure failures)", failed),
        ("**builds lost**", lost),
        ("**builds completed twice**", twice),
        ("**builders that ran two builds at once**", len(overlaps) + db_overlaps),
        ("longest stall (no build ended), s", "%.1f (after: %s)" % (stall, cause[-1] if cause else "start")),
        ("longest wait for the next build to end once RabbitMQ was back, s", recovery("broker back")),
        ("longest wait for the next build to end once PostgreSQL was back, s", recovery("database back")),
        ("run time, s", "%.0f" % (end - begin)),
        ("builds per second, faults included", "%.1f" % (ended / max(end - begin, 1))),
        ("masters SIGKILLed", counts.get("kill master", 0)),
        ("agents SIGKILLed mid-build", counts.get("kill agent", 0)),
        ("RabbitMQ restarts", counts.get("restart broker", 0)),
        ("PostgreSQL crashes (immediate) and restarts", counts.get("crash database", 0)),
        ("builds requeued after a failure (retrying)", infra),
        ("builds whose command ran more than once", rerun),
    ]
    print("| fault-injection run | figure |")
    print("|---|---|")
    for name, value in rows:
        print("| %s | %s |" % (name, value))
    if overlaps:
        print("overlapping builds (builder, build, attempt): %s" % overlaps[:10], file=sys.stderr)
    missing = [kind for kind in ("kill master", "kill agent", "restart broker", "crash database") if not counts.get(kind)]
    if missing:
        print("chaos: the run ended before every kind of fault was injected (missing: %s)" % ", ".join(missing))
    ok = lost == 0 and twice == 0 and not overlaps and db_overlaps == 0 and not missing
    print("chaos: %s" % ("PASS: nothing lost, nothing completed twice, no builder ran two builds at once"
                         if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
