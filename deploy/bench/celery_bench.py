#!/usr/bin/env python3
"""Celery 5 on the same broker as buildd, running the same no-op jobs: the side-by-side figures of
`deploy/localfarm bench`.

Latency: one task at a time to an idle worker, from just before `apply_async` to the task's first line
(the same span as buildd's "submit committed -> job in the agent's hands", minus buildd's database
commit, which Celery does not have). Drain: a backlog of tasks queued with no worker running, then
drained; the rate runs from the first task's start to the last task's end. Tasks use `acks_late`
(acked after they ran), persistent messages and a durable queue, Celery's defaults otherwise (no
publisher confirms, no result backend). With --backend, one more drain is the peer of a build's durability:
publisher confirms, `acks_late`, `task_track_started` (the STARTED state is written as a build's BUILDING is)
and the results in PostgreSQL through SQLAlchemy (the server's fsync on, as the bench's is). Prints one JSON
line like buildd-bench does.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TASKS = r'''
import os, time
from celery import Celery
DURABLE = False
app = Celery("bench", broker=os.environ["BENCH_BROKER"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "1")),
                task_ignore_result=True, task_default_queue="bench", broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False, worker_send_task_events=False)
if DURABLE:
    app.conf.update(result_backend=os.environ["BENCH_BACKEND"], task_ignore_result=False, task_track_started=True,
                    broker_transport_options={"confirm_publish": True}, result_persistent=True)
_out = None

@app.task(name="noop")
def noop(sent):
    global _out
    started = time.time()
    if _out is None:
        _out = os.open(os.environ["BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_out, ("%r %r %r\n" % (sent, started, time.time())).encode())
'''


def progress(text):
    print("[celery-bench] " + text, file=sys.stderr, flush=True)


def lines(path):
    try:
        with open(path) as f:
            return [tuple(map(float, l.split())) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


class Worker:
    def __init__(self, workdir, env, pool, concurrency, module="bench_tasks"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", module, "worker", "-P", pool, "-c", str(concurrency),
             "-Q", "bench", "--loglevel=WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "worker.log"), "a"))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_lines(path, want, timeout):
    deadline = time.time() + timeout
    while count_lines(path) < want:
        if time.time() > deadline:
            raise SystemExit("celery-bench: timed out waiting for %d task(s) in %s" % (want, path))
        time.sleep(0.0001)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", required=True, help="AMQP URL of an empty vhost")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--backend", help="a PostgreSQL URL (postgresql://user@host:port/db) for the durable drain")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="celery-bench-")
    with open(os.path.join(workdir, "bench_tasks.py"), "w") as f:
        f.write(TASKS)
    with open(os.path.join(workdir, "bench_tasks_durable.py"), "w") as f:
        f.write(TASKS.replace("DURABLE = False", "DURABLE = True"))
    sys.path.insert(0, workdir)
    os.environ["BENCH_BROKER"] = args.broker
    env = dict(os.environ, PYTHONPATH=workdir)
    import celery
    import bench_tasks  # noqa: E402  (the module written above)
    app, noop = bench_tasks.app, bench_tasks.noop
    result = {"bench": "celery", "version": celery.__version__}

    # Latency: an idle solo worker, one task at a time.
    out = os.path.join(workdir, "latency.out")
    os.environ["BENCH_OUT"] = out
    worker = Worker(workdir, dict(env, BENCH_OUT=out), "solo", 1)
    with app.producer_or_acquire() as producer:
        noop.apply_async((time.time(),), producer=producer)  # warm-up: the worker is up once this ran
        wait_lines(out, 1, 120)
        latencies = []
        for i in range(args.samples):
            sent = time.time()
            noop.apply_async((sent,), producer=producer)
            wait_lines(out, i + 2, 30)
            time.sleep(0.002)
        for sent, started, _ in lines(out)[1:]:
            latencies.append((started - sent) * 1000)
    worker.stop()
    latencies.sort()
    result["p50_ms"] = round(latencies[len(latencies) // 2], 3)
    result["p99_ms"] = round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3)
    progress("latency p50 %.3f ms, p99 %.3f ms over %d tasks" % (result["p50_ms"], result["p99_ms"], len(latencies)))

    # Drain: the backlog is queued first, then one worker configuration drains it.
    best = 0.0
    # (a solo pool drained only about 25 tasks/s here, so the two-process pool is what is compared)
    for label, pool, concurrency, prefetch in (("prefork2", "prefork", 2, 4), ("prefork2_prefetch16", "prefork", 2, 16)):
        out = os.path.join(workdir, "drain-%s.out" % label)
        app.control.purge()
        start = time.time()
        with app.producer_or_acquire() as producer:
            for _ in range(args.tasks):
                noop.apply_async((0.0,), producer=producer)
        enqueue = args.tasks / (time.time() - start)
        worker = Worker(workdir, dict(env, BENCH_OUT=out, BENCH_PREFETCH=str(prefetch)), pool, concurrency)
        wait_lines(out, args.tasks, args.tasks / 50 + 120)
        worker.stop()
        rows = lines(out)
        first = min(r[1] for r in rows)
        last = max(r[2] for r in rows)
        rate = len(rows) / (last - first)
        result["drain_per_s_" + label] = round(rate, 1)
        result["enqueue_per_s_" + label] = round(enqueue, 1)
        best = max(best, rate)
        progress("%s: enqueued %d at %.0f/s, drained at %.0f tasks/s" % (label, args.tasks, enqueue, rate))
    result["best_drain_per_s"] = round(best, 1)

    if args.backend:
        # The peer of a build: confirmed publishes, acked after the task ran, STARTED and SUCCESS written to
        # PostgreSQL (fsync on) by the worker, as a build's BUILDING and FULLYBUILT are.
        backend = "db+" + args.backend.replace("postgresql://", "postgresql+psycopg2://", 1)
        os.environ["BENCH_BACKEND"] = backend
        import bench_tasks_durable  # noqa: E402
        durable_app, durable_noop = bench_tasks_durable.app, bench_tasks_durable.noop
        out = os.path.join(workdir, "drain-durable.out")
        durable_app.control.purge()
        start = time.time()
        with durable_app.producer_or_acquire() as producer:
            for _ in range(args.tasks):
                durable_noop.apply_async((0.0,), producer=producer)
        enqueue = args.tasks / (time.time() - start)
        worker = Worker(workdir, dict(env, BENCH_OUT=out, BENCH_PREFETCH="4", BENCH_BACKEND=backend), "prefork", 2,
                        module="bench_tasks_durable")
        wait_lines(out, args.tasks, args.tasks / 20 + 180)
        worker.stop()
        rows = lines(out)
        rate = len(rows) / (max(r[2] for r in rows) - min(r[1] for r in rows))
        # Every task's result is in the database, as every build's end is.
        stored = durable_app.backend.ResultSession()
        from sqlalchemy import text
        done = stored.execute(text("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")).scalar()
        stored.close()
        result["drain_per_s_durable"] = round(rate, 1)
        result["enqueue_per_s_durable"] = round(enqueue, 1)
        result["durable_results_stored"] = done
        progress("durable (confirms, acks_late, track_started, PostgreSQL results): enqueued %d at %.0f/s, drained "
                 "at %.0f tasks/s, %d results stored" % (args.tasks, enqueue, rate, done))
    print(json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
