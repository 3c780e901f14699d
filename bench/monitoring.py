"""Benchmark: the cost of run recording, and the health endpoint under load and with the broker
down.

Run by hand (`make bench-monitoring`) on PostgreSQL (BENCH_DATABASE_URL) and Redis
(BENCH_REDIS_URL, default DB 14, flushed). Three parts:

1. **Recording overhead**: a real worker (prefork, concurrency 2) runs N no-op tasks sent as
   scheduled runs (ledger rows exist, headers set: the worker updates the row when the run ends)
   and N sent plainly (nothing recorded), alternating, four times each (the best run counts);
   throughput = N / (time from the first send until every result is stored).
2. **/health/scheduler under load**: gunicorn (2 workers) on loopback; a paced load generator
   sends 100 requests/s for 30 s (keep-alive off, one connection per request); latency
   percentiles as the client sees them.
3. **Broker down**: gunicorn with a broker URL pointing at a Redis the benchmark started and then
   stopped; the worst answer of /health/scheduler, /health/ready and /metrics over 20 requests
   each (with the health cache off, so every request does the work).

    python bench/monitoring.py [--tasks 2000] [--rps 100] [--seconds 30]
"""

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, configure, pct, start_django  # noqa: E402

configure(HEALTH_TOKEN="bench-token")
from tests.support.processes import free_port  # noqa: E402  (ROOT is on the path now)


def part_recording(tasks, log_dir):
    import datetime as dt

    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask
    from django_celery_results.models import TaskResult

    from scheduling.beat import Dispatch
    from tests.support.probe import noop
    from tests.support.processes import wait_for_ping, worker

    every, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
    job, _ = PeriodicTask.objects.get_or_create(
        name="bench-noop", defaults={"task": "tests.noop", "interval": every, "enabled": False})
    env = {**os.environ, "LOG_LEVEL": "warning"}
    hostname = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    service = worker(env, log_dir, hostname, app="tests.support.probe", concurrency=2).start()
    try:
        wait_for_ping(env, hostname)
        results = {"plain": [], "recorded": []}
        for round_ in range(4):
            for variant in (("plain", "recorded") if round_ % 2 else ("recorded", "plain")):
                ids = [str(uuid.uuid4()) for _ in range(tasks)]
                if variant == "recorded":
                    base = timezone.now() + dt.timedelta(days=round_ + 1)
                    Dispatch.objects.bulk_create([
                        Dispatch(periodic_task=job, slot=base + dt.timedelta(seconds=i),
                                 task_id=task_id, task_name="tests.noop", state="sent")
                        for i, task_id in enumerate(ids)])
                started = time.perf_counter()
                for i, task_id in enumerate(ids):
                    headers = {}
                    if variant == "recorded":
                        headers = {"periodic_task_name": "bench-noop",
                                   "scheduled_slot": f"2026-01-01T00:00:{i % 60:02d}+00:00"}
                    noop.apply_async(task_id=task_id, headers=headers)
                while TaskResult.objects.filter(task_id__in=ids).count() < tasks:
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
                results[variant].append(tasks / elapsed)
                if variant == "recorded":
                    done = Dispatch.objects.filter(task_id__in=ids, state="succeeded").count()
                    assert done == tasks, f"only {done} of {tasks} runs recorded"
    finally:
        service.stop()
        Dispatch.objects.filter(periodic_task=job).delete()
    plain, recorded = max(results["plain"]), max(results["recorded"])
    print(f"\n1. {tasks} no-op tasks per run, worker concurrency 2, best of 4 alternating runs")
    print("| variant | tasks/s |")
    print("|---|---:|")
    print(f"| not recorded | {plain:.0f} |")
    print(f"| recorded (the ledger row updated when the run ends) | {recorded:.0f} |")
    print(f"| ratio | {recorded / plain:.2f} |")


class Gunicorn:
    def __init__(self, env, log_dir, port):
        self.port = port
        self.log = open(log_dir / f"gunicorn-{port}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--timeout", "30"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if get(port, "/health/live")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self.log.close()


def get(port, path, token=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - started


def part_load(rps, seconds, log_dir):
    server = Gunicorn({**os.environ, "LOG_LEVEL": "warning"}, log_dir, free_port())
    latencies, statuses, lock = [], {}, threading.Lock()

    def one():
        status, took = get(server.port, "/health/scheduler")
        with lock:
            latencies.append(took)
            statuses[status] = statuses.get(status, 0) + 1

    try:
        threads, start = [], time.perf_counter()
        for i in range(rps * seconds):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            thread = threading.Thread(target=one)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    finally:
        server.stop()
    ms = [x * 1000 for x in latencies]
    print(f"\n2. /health/scheduler, {rps} requests/s for {seconds} s ({len(ms)} requests, "
          f"statuses {statuses})")
    print("| p50 | p99 | max |")
    print("|---:|---:|---:|")
    print(f"| {statistics.median(ms):.1f} ms | {pct(ms, 99):.1f} ms | {max(ms):.1f} ms |")


def part_broker_down(log_dir):
    redis_server = shutil.which("redis-server")
    port = free_port()
    broker = subprocess.Popen([redis_server, "--port", str(port), "--save", "", "--appendonly",
                               "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    env = {**os.environ, "CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0",
           "MONITORING_HEALTH_CACHE": "0", "LOG_LEVEL": "error"}
    server = Gunicorn(env, log_dir, free_port())
    try:
        broker.terminate()
        broker.wait(10)
        print("\n3. Broker stopped: worst of 20 answers each (health cache off)")
        print("| endpoint | status | worst |")
        print("|---|---:|---:|")
        for path in ("/health/scheduler", "/health/ready", "/metrics"):
            answers = [get(server.port, path, token="bench-token") for _ in range(20)]
            codes = sorted({status for status, _ in answers})
            print(f"| {path} | {codes} | {max(t for _, t in answers) * 1000:.0f} ms |")
    finally:
        server.stop()
        if broker.poll() is None:
            broker.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rps", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()

    import redis

    start_django()
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    print(f"logs in {log_dir}")
    part_recording(args.tasks, log_dir)
    part_load(args.rps, args.seconds, log_dir)
    part_broker_down(log_dir)


if __name__ == "__main__":
    main()
