#!/usr/bin/env python3
"""The checker of the fault-injection run (`deploy/localfarm chaos`).

Reads the run's database (through psql), the builders' journal (written by deploy/bench/chaos-build)
and the fault log, and prints:

  builds lost               queued builds that did not end as they may: FULLYBUILT with its result file,
                            or FAILEDTOBUILD with exactly three infrastructure failures in its ledger
                            (the job threshold); any other end counts as lost
  builds completed twice    builds with more than one accepted completion in their history
  builders running two      build commands that found their builder's lock taken (a builder asked to
                            run a second build while one ran), builders the database showed with two
                            builds at once in the samples taken while the faults ran, and builders whose
                            BUILDING intervals in the history overlap
  longest stall             the longest time in which no build ended while builds remained

Faults count only with their effect checked by the run (a killed pid gone; the broker's and database's
process replaced and answering again); a fault whose effect failed fails the run.

Exit status 0 when the first three are all 0, no more than --max-failed-share of the builds ended other
than FULLYBUILT, the database was sampled while the faults ran, and every kind of fault happened.

The cluster run (`deploy/localfarm cluster`) names its fault kinds with --kinds: each must have logged
"KIND begin" and "KIND end" lines, and the checker prints, per kind, how long it lasted, the time to the
first build ended after it began and after it ended, and the longest stall in its window (from its begin
to the next fault's begin). With --submits, every submit acknowledged to the submitter (its build id) must
exist at the end - after the database failover. With --fenced-agent and --logs, the masters' logs must
show that agent's late events refused by the fencing token (the attempt) after it came back.
"""
import argparse
import collections
import datetime
import glob
import subprocess
import sys

TERMINAL = ("FULLYBUILT", "FAILEDTOBUILD", "MANUALDEPWAIT", "CHROOTWAIT", "SUPERSEDED", "FAILEDTOUPLOAD", "CANCELLED")


PSQL_PREFIX = []


def query(database, sql):
    out = subprocess.run(PSQL_PREFIX + ["psql", "-qAtX", "-F", "\t", database, "-c", sql], check=True,
                         capture_output=True, text=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def per_kind(kinds, faults, finished, recorded):
    """Rows of the per-fault-kind table, and the kinds that did not happen with their effect checked.
    RECORDED: (when a build's command ended on its agent, how long until the farm recorded the build's end)."""
    rows, missing = [], []
    begins = sorted((at, what.split(" ", 1)[0]) for at, what in faults if what.split(" ")[1:2] == ["begin:"])
    for kind in kinds:
        begin = next((at for at, what in faults if what.startswith(kind + " begin")), None)
        end = next((at for at, what in faults if what.startswith(kind + " end")), None)
        if begin is None or end is None:
            missing.append(kind)
            continue
        following = [at for at, _ in begins if at > begin]
        window_end = following[0] if following else max(end, faults[-1][0])
        after_begin = next((t for t in finished if t >= begin), None)
        after_end = next((t for t in finished if t >= end), None)
        marks = [begin] + [t for t in finished if begin <= t <= window_end] + [window_end]
        stall, stall_from = max((b - a, a) for a, b in zip(marks, marks[1:]))
        ended = sum(1 for t in finished if begin <= t <= end)
        waited = max((delay for at, delay in recorded if begin <= at <= window_end), default=0.0)
        rows.append((kind, "%.1f" % (end - begin), ended,
                     "-" if after_begin is None else "%.1f" % (after_begin - begin),
                     "-" if after_end is None else "%.1f" % (after_end - end), "%.1f" % stall,
                     "%.1f" % (stall_from - begin), "%.1f" % waited))
    return rows, missing


def fenced_refusals(logs, agent, since):
    """Masters' log lines from SINCE (epoch seconds) on refusing AGENT's events or files for an attempt that is
    not current: the fencing token at work."""
    count = 0
    for path in glob.glob(logs + "/m*.log"):
        with open(path, errors="replace") as log:
            for line in log:
                if "builder.name=%s " % agent not in line and "builder.name=%s\n" % agent not in line:
                    continue
                if "is not current" not in line and "token refused" not in line:
                    continue
                stamp = line.split(" ", 1)[0]
                if not stamp.startswith("ts="):
                    continue
                at = datetime.datetime.strptime(stamp[3:].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
                if at.replace(tzinfo=datetime.timezone.utc).timestamp() >= since:
                    count += 1
    return count


def main():
    parser = argparse.ArgumentParser(description="Check a fault-injection run.")
    parser.add_argument("--dir", required=True, help="the run's folder (journal, faults.log)")
    parser.add_argument("--database", required=True, help="PostgreSQL URL of the run's database")
    parser.add_argument("--builds", type=int, required=True, help="builds queued")
    parser.add_argument("--max-failed-share", type=float, default=0.05,
                        help="most builds (a share) that may end FAILEDTOBUILD rather than FULLYBUILT")
    parser.add_argument("--psql-prefix", default="", help="a command psql runs under (ip netns exec HOST)")
    parser.add_argument("--kinds", default="", help="the run's fault kinds, comma-separated (the cluster run)")
    parser.add_argument("--submits", help="acknowledged submits: lines of 'N BUILD-ID'")
    parser.add_argument("--fenced-agent", default="", help="the agent cut off for longer than its lease")
    parser.add_argument("--logs", help="the folder of the masters' logs (m*.log)")
    parser.add_argument("--stall-bound", action="append", default=[], metavar="KIND=SECONDS",
                        help="fail when the longest stall in KIND's window reaches SECONDS (repeatable)")
    parser.add_argument("--record-bound", action="append", default=[], metavar="KIND=SECONDS",
                        help="fail when a build whose command ended in KIND's window waited SECONDS or more for the "
                             "farm to record its end (repeatable)")
    args = parser.parse_args()
    PSQL_PREFIX.extend(args.psql_prefix.split())

    statuses = dict((s, int(n)) for s, n in query(args.database, """
        SELECT status, count(*) FROM build WHERE source_name = 'chaos' GROUP BY status"""))
    queued = sum(statuses.values())
    ended = sum(n for s, n in statuses.items() if s in ("FULLYBUILT", "FAILEDTOBUILD"))
    unfinished = queued - ended
    without_files = int(query(args.database, """
        SELECT count(*) FROM build b WHERE b.source_name = 'chaos' AND b.status = 'FULLYBUILT'
           AND NOT EXISTS (SELECT 1 FROM build_file f WHERE f.build_id = b.id AND f.attempt = b.attempt
                              AND f.kind = 'result')""")[0][0])
    # FAILEDTOBUILD is an allowed end only after exactly the job threshold of infrastructure failures.
    failed_otherwise = int(query(args.database, """
        SELECT count(*) FROM build WHERE source_name = 'chaos' AND status = 'FAILEDTOBUILD' AND failure_count <> 3
        """)[0][0])
    # (More queued than expected is not a loss: a submit whose answer was lost may still have committed;
    # its build counts among the unfinished if it did not end. It must never offset a loss.)
    lost = max(0, args.builds - queued) + unfinished + without_files + failed_otherwise
    twice = int(query(args.database, """
        SELECT count(*) FROM (SELECT e.build_id FROM build_event e JOIN build b ON b.id = e.build_id
                               WHERE b.source_name = 'chaos' AND e.status IN %s
                               GROUP BY e.build_id HAVING count(*) > 1) x""" % (TERMINAL,))[0][0])
    # From the history: a builder whose next build started before its previous one ended.
    history_overlaps = int(query(args.database, """
        WITH runs AS (
            SELECT e.builder, e.at AS started,
                   (SELECT min(f.at) FROM build_event f WHERE f.build_id = e.build_id AND f.id > e.id
                       AND f.status NOT IN ('GATHERING', 'BUILDING')) AS ended
              FROM build_event e JOIN build b ON b.id = e.build_id
             WHERE e.status = 'BUILDING' AND b.source_name = 'chaos' AND e.builder IS NOT NULL),
        ordered AS (SELECT started, lag(ended) OVER (PARTITION BY builder ORDER BY started) AS previous_end FROM runs)
        SELECT count(*) FROM ordered WHERE previous_end IS NOT NULL AND started < previous_end""")[0][0])
    # Sampled while the faults ran (deploy/localfarm-chaos.sh, every half second the database answered).
    samples = []
    with open(args.dir + "/samples") as sampled:
        for line in sampled:
            at, count = line.split()
            samples.append((float(at), int(count)))
    db_overlaps = max((count for _, count in samples), default=0)

    starts = collections.Counter()
    overlaps = []
    command_ended = {}
    with open(args.dir + "/journal") as journal:
        for line in journal:
            kind, builder, build, attempt, stamp = line.split()
            if kind == "end":
                command_ended[(build, attempt)] = float(stamp)
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
    # How long each build waited, once its command had ended on its agent, for the farm to record its end
    # (its events applied): what a master that cannot apply events holds up, whatever a build lasts.
    recorded = []
    for build, attempt, at in query(args.database, """
            SELECT id, attempt, extract(epoch FROM date_finished) FROM build
             WHERE source_name = 'chaos' AND status = 'FULLYBUILT'"""):
        command_end = command_ended.get((build, attempt))
        if command_end is not None:
            recorded.append((command_end, float(at) - command_end))
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
            if what.startswith(marker):
                following = [t for t in finished if t >= at]
                if following:
                    worst = max(worst or 0.0, following[0] - at)
        return "-" if worst is None else "%.1f" % worst
    # Only faults whose effect the run checked: "... (pid N gone)"; the services also "back ... answering".
    counts = collections.Counter(what.split(" ")[0] + " " + what.split(" ")[1] for _, what in faults
                                 if what.startswith(("kill", "restart", "crash")) and " gone)" in what)
    back = collections.Counter(what.split(" ")[0] for _, what in faults if " back (" in what and "answering" in what)
    failed_faults = [what for _, what in faults if what.startswith("FAILED")]
    skipped = sum(1 for _, what in faults if what.startswith("skipped"))
    failed = statuses.get("FAILEDTOBUILD", 0)
    infra = int(query(args.database, """
        SELECT count(*) FROM build_event e JOIN build b ON b.id = e.build_id
         WHERE b.source_name = 'chaos' AND e.message LIKE 'retrying:%'""")[0][0])

    rows = [
        ("builds queued", args.builds),
        ("builds ended FULLYBUILT", statuses.get("FULLYBUILT", 0)),
        ("builds ended FAILEDTOBUILD (3 infrastructure failures)", failed - failed_otherwise),
        ("builds ended FAILEDTOBUILD without exactly 3 infrastructure failures (counted lost)", failed_otherwise),
        ("**builds lost**", lost),
        ("**builds completed twice**", twice),
        ("**builders that ran two builds at once**", len(overlaps) + db_overlaps + history_overlaps),
        ("  of which: caught by the build command's lock / in the history / in database samples",
         "%d / %d / %d (max of %d samples taken while the faults ran)" % (len(overlaps), history_overlaps, db_overlaps,
                                                                          len(samples))),
        ("longest stall (no build ended), s", "%.1f (after: %s)" % (stall, cause[-1] if cause else "start")),
        ("run time, s", "%.0f" % (end - begin)),
        ("builds whose wait to be recorded (command ended on the agent to the end recorded) was measured: "
         "count / median / longest, s", "%d / %.2f / %.1f" % (
             len(recorded), sorted(d for _, d in recorded)[len(recorded) // 2] if recorded else 0.0,
             max((d for _, d in recorded), default=0.0))),
        ("builds per second, faults included", "%.1f" % (ended / max(end - begin, 1))),
    ]
    kinds = [k for k in args.kinds.split(",") if k]
    missing_submits = 0
    if not kinds:
        rows += [
            ("longest wait for the next build to end once RabbitMQ was back, s", recovery("broker back")),
            ("longest wait for the next build to end once PostgreSQL was back, s", recovery("database back")),
            ("masters SIGKILLed", counts.get("kill master", 0)),
            ("agents SIGKILLed mid-build", counts.get("kill agent", 0)),
            ("RabbitMQ restarts (old node gone, new one answering)", min(counts.get("restart broker", 0), back["broker"])),
            ("PostgreSQL crashes (immediate) and restarts (old postmaster gone, new one answering)",
             min(counts.get("crash database", 0), back["database"])),
            ("faults skipped (the process was not running) / whose effect failed", "%d / %d" % (skipped, len(failed_faults))),
        ]
    else:
        rows.append(("faults whose effect failed", len(failed_faults)))
    if args.submits:
        acknowledged = [line.split()[1] for line in open(args.submits) if line.strip()]
        present = set()
        for chunk in range(0, len(acknowledged), 500):
            ids = ",".join(str(int(i)) for i in acknowledged[chunk:chunk + 500])
            present |= set(r[0] for r in query(args.database, "SELECT id FROM build WHERE id IN (%s)" % ids))
        missing_submits = sum(1 for i in acknowledged if i not in present)
        rows.append(("submits acknowledged while the faults ran", len(acknowledged)))
        rows.append(("**acknowledged submits missing at the end (after the failover)**", missing_submits))
    fenced = None
    if args.fenced_agent and args.logs:
        came_back = next((at for at, what in faults if what.startswith("agent-lease end")), None)
        fenced = 0 if came_back is None else fenced_refusals(args.logs, args.fenced_agent, came_back)
        rows.append(("late events or files of %s refused by the fencing token once it was back (masters' log lines)"
                     % args.fenced_agent, fenced))
    rows += [
        ("builds requeued after a failure (retrying)", infra),
        ("builds whose command ran more than once", rerun),
    ]
    print("| fault-injection run | figure |")
    print("|---|---|")
    for name, value in rows:
        print("| %s | %s |" % (name, value))
    if overlaps:
        print("overlapping builds (builder, build, attempt): %s" % overlaps[:10], file=sys.stderr)
    stalled = []
    if kinds:
        table, missing = per_kind(kinds, faults, finished, recorded)
        print()
        print("| fault | lasted, s | builds ended meanwhile | first build ended after it began, s "
              "| ... after it ended, s | longest stall in its window, s | ... began after the fault began, s "
              "| longest a built build waited to be recorded, s |")
        print("|---|---|---|---|---|---|---|---|")
        for row in table:
            print("| %s | %s | %s | %s | %s | %s | %s | %s |" % row)
        if fenced == 0:
            missing.append("fencing refusal seen")
        stalls = {row[0]: float(row[5]) for row in table}
        waits = {row[0]: float(row[7]) for row in table}
        for bound in args.stall_bound:
            kind, seconds = bound.split("=", 1)
            if kind in stalls and stalls[kind] >= float(seconds):
                stalled.append("%s: longest stall %.1f s, not under %s s" % (kind, stalls[kind], seconds))
        for bound in args.record_bound:
            kind, seconds = bound.split("=", 1)
            if kind in waits and waits[kind] >= float(seconds):
                stalled.append("%s: a built build waited %.1f s to be recorded, not under %s s" % (kind, waits[kind], seconds))
    else:
        missing = [kind for kind in ("kill master", "kill agent", "restart broker", "crash database")
                   if not counts.get(kind)]
        if not back["broker"]:
            missing.append("broker back")
        if not back["database"]:
            missing.append("database back")
    if missing:
        print("chaos: the run ended before every kind of fault happened with its effect checked (missing: %s)"
              % ", ".join(missing))
    for what in failed_faults:
        print("chaos: a fault did not have its effect: %s" % what)
    for what in stalled:
        print("chaos: a fault stalled the farm for too long: %s" % what)
    not_built = queued - statuses.get("FULLYBUILT", 0)
    share = not_built / max(queued, 1)
    too_many_failed = share > args.max_failed_share
    if too_many_failed:
        print("chaos: %d of %d builds (%.1f%%) did not end FULLYBUILT, more than the %.1f%% allowed"
              % (not_built, queued, 100 * share, 100 * args.max_failed_share))
    too_few_samples = len(samples) < 3
    if too_few_samples:
        print("chaos: only %d database samples were taken while the faults ran" % len(samples))
    ok = (lost == 0 and twice == 0 and missing_submits == 0 and not overlaps and db_overlaps == 0 and history_overlaps == 0 and not missing
          and not failed_faults and not too_many_failed and not too_few_samples and not stalled)
    print("chaos: %s" % ("PASS: nothing lost, nothing completed twice, no builder ran two builds at once"
                         if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
