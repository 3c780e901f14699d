"""Benchmark: this project's worker against the usual setup, side by side in one run.

The usual setup is stock Celery with django-celery-results (database results, ``track_started``,
extended results; bench/stock/), no project code. Every worker is prefork, concurrency 2, on the
same PostgreSQL and Redis (a Redis database each, flushed), all started before the first round
and left idle between turns. Rounds alternate the order of the variants; each variant runs N
no-op tasks per round (throughput = N / time from the first send until every result is stored as
SUCCESS); the best round counts, and ratios are taken against the stock worker of the same run:

* stock: Celery + django-celery-results;
* project, plain: this project's worker, tasks sent plainly;
* project, recorded: the same worker, tasks sent as scheduled runs (a ledger row each, updated
  when the run ends);
* project, prefetch on: plain, with ``CELERY_WORKER_DISABLE_PREFETCH=0`` (what not prefetching
  costs).

Memory: each worker's main process plus its pool processes, idle after the rounds: RSS (what
the issue measured; pages shared between the forked processes count once per process) and PSS
(shared pages split between the processes that share them).

    python bench/workers.py [--tasks 2000] [--rounds 4]
"""

import argparse
import datetime as dt
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, configure, disabled_job, start_django  # noqa: E402

configure(LOG_LEVEL="warning")
from tests.support.processes import Service, wait_for_ping, worker  # noqa: E402

REDIS = os.environ["CELERY_BROKER_URL"].rsplit("/", 1)[0]


def memory(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MiB of ``pid`` and its children."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True).stdout.split()
    rss = pss = 0
    for each in [pid, *map(int, children)]:
        for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


class Variant:
    def __init__(self, name, db, log_dir, *, stock=False, recorded=False, **env):
        self.name, self.recorded, self.stock = name, recorded, stock
        self.broker = f"{REDIS}/{db}"
        subprocess.run(["redis-cli", "-u", self.broker, "flushdb"], check=True,
                       capture_output=True)
        self.env = {**os.environ, "CELERY_BROKER_URL": self.broker, **env}
        self.hostname = f"{name.replace(' ', '-').replace(',', '')}-{uuid.uuid4().hex[:4]}" \
                        f"@{socket.gethostname()}"
        if stock:
            self.env.update(DJANGO_SETTINGS_MODULE="stock.settings",
                            PYTHONPATH=str(ROOT / "bench"))
            self.service = Service("stock", [
                sys.executable, "-m", "celery", "-A", "stock.app", "worker", "--pool=prefork",
                "--concurrency=2", "--loglevel=WARNING", f"--hostname={self.hostname}",
                "--without-mingle", "--without-gossip"], self.env, log_dir)
        else:
            self.service = worker(self.env, log_dir, self.hostname, app="tests.support.probe",
                                  concurrency=2)
        self.rounds: list[float] = []

    def start(self):
        self.service.start()
        return self

    def ready(self):
        wait_for_ping(self.env, self.hostname, timeout=120)

    def run(self, tasks: int, job) -> float:
        from django_celery_results.models import TaskResult

        from project.celery import app
        from scheduling.beat import Dispatch

        ids = [str(uuid.uuid4()) for _ in range(tasks)]
        if self.recorded:
            base = dt.datetime(2030, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
                days=len(self.rounds) + 1)
            Dispatch.objects.bulk_create([
                Dispatch(periodic_task=job, slot=base + dt.timedelta(seconds=i), task_id=task_id,
                         task_name="tests.noop", state="sent") for i, task_id in enumerate(ids)])
        name = "bench.noop" if self.stock else "tests.noop"
        # (an explicit connection: a Celery app's own broker URL yields to CELERY_BROKER_URL)
        with app.connection_for_write(self.broker) as connection:
            started = time.perf_counter()
            for i, task_id in enumerate(ids):
                headers = {"periodic_task_name": "bench-noop",
                           "scheduled_slot": f"2030-01-01T00:00:{i % 60:02d}+00:00"} \
                    if self.recorded else {}
                app.send_task(name, task_id=task_id, headers=headers, connection=connection)
            while TaskResult.objects.filter(task_id__in=ids, status="SUCCESS").count() < tasks:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        if self.recorded:
            done = Dispatch.objects.filter(task_id__in=ids, state="succeeded").count()
            assert done == tasks, f"only {done} of {tasks} runs recorded"
        TaskResult.objects.filter(task_id__in=ids).delete()
        self.rounds.append(tasks / elapsed)
        return self.rounds[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    start_django()
    import tempfile

    from scheduling.beat import Dispatch

    job = disabled_job("bench-noop", "tests.noop")
    log_dir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    variants = [
        Variant("stock", 10, log_dir, stock=True),
        Variant("project, plain", 11, log_dir),
        Variant("project, recorded", 12, log_dir, recorded=True),
        Variant("project, prefetch on", 13, log_dir, CELERY_WORKER_DISABLE_PREFETCH="0"),
    ]
    try:
        for variant in variants:
            variant.start()
        for variant in variants:
            variant.ready()
        idle_before = {v.name: memory(v.service.proc.pid) for v in variants}
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
            for variant in order:
                rate = variant.run(args.tasks, job)
                print(f"round {round_ + 1}: {variant.name}: {rate:.0f} tasks/s", flush=True)
        time.sleep(2)  # idle again (the pool processes have returned their last results)
        idle_after = {v.name: memory(v.service.proc.pid) for v in variants}
    finally:
        for variant in variants:
            variant.service.stop()
        Dispatch.objects.filter(periodic_task=job).delete()
    stock = max(variants[0].rounds)
    print(f"\n{args.tasks} no-op tasks per round, prefork concurrency 2, best of {args.rounds} "
          "alternating rounds; memory of main + 2 pool processes, idle")
    print("| worker | tasks/s (best) | all rounds | vs stock | idle RSS before → after "
          "| idle PSS after | RSS vs stock |")
    print("|---|---:|---|---:|---:|---:|---:|")
    stock_rss = idle_after["stock"][0]
    for v in variants:
        best = max(v.rounds)
        rounds = ", ".join(f"{r:.0f}" for r in v.rounds)
        before, after = idle_before[v.name], idle_after[v.name]
        print(f"| {v.name} | {best:.0f} | {rounds} | {best / stock:.2f}x | "
              f"{before[0]:.0f} → {after[0]:.0f} MiB | {after[1]:.0f} MiB | "
              f"{after[0] / stock_rss:.2f}x |")
    print(f"\nlogs: {log_dir}")


if __name__ == "__main__":
    main()
