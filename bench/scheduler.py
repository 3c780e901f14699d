"""Benchmark: our scheduler (LeasedScheduler) versus stock django-celery-beat DatabaseScheduler.

Run by hand (`make bench-scheduler`) on PostgreSQL (BENCH_DATABASE_URL, created and migrated if
missing) and Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/14, flushed). Three parts:

1. **Tick and reload with N enabled periodic tasks** (default 10,000), both schedulers in one
   process on the same rows. Reload = what each does when the schedule changed (stock: build
   every entry and re-populate its heap; ours: load the rows and plan each next slot from the
   ledger). Tick = one idle tick (nothing due), including each one's change check; ours also
   renews its lease and writes its heartbeat.
2. **Due-to-start latency**: a real `celery beat` and an idle `celery worker`; 50 jobs due at the
   same instant every 10 s; latency = probe task start (worker clock) minus the slot.
3. **Change to effect**: a job on a one-second interval; its kwargs changed by a Django admin
   save (test client, same form a person posts) or by `QuerySet.update()`; latency = first run
   carrying the new kwargs minus the moment of the change. 20 trials each.

    python bench/scheduler.py [--tasks 10000] [--ticks 200] [--rounds 4] [--trials 20]
"""

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import configure, pct, start_django  # noqa: E402

configure()


def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def reset():
    from django.db import connection

    # TRUNCATE, not .delete(): django-celery-beat bumps its change row once per deleted task.
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE django_celery_beat_periodictask, scheduling_dispatch, "
            "scheduling_jobpolicy, scheduling_schedulechange, scheduling_beatlease, "
            "scheduling_beatheartbeat CASCADE"
        )


def make_tasks(count, seconds, prefix, task="scheduling.expire_coupons", anchor=None):
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    PeriodicTask.objects.bulk_create(
        [PeriodicTask(name=f"{prefix}-{i:05d}", task=task, interval=every) for i in range(count)],
        batch_size=2000,
    )
    PeriodicTask.objects.filter(name__startswith=prefix).update(
        date_changed=anchor or timezone.now()
    )


def part_tick_and_reload(tasks, ticks):
    from django_celery_beat.schedulers import DatabaseScheduler

    from project.celery import app
    from scheduling.beat import LeasedScheduler

    reset()
    make_tasks(tasks, 3600, "idle")  # nothing due during the measurement
    stock = DatabaseScheduler(app=app)
    ours = LeasedScheduler(app=app, instance="bench-ours")
    stock.tick()
    ours.tick()

    def reload_stock():
        stock._schedule = stock.all_as_schedule()
        stock.populate_heap()

    def reload_ours():
        ours.planner.load()
        ours.planner.plan()

    results = {}
    for name, fn in (("stock reload", reload_stock), ("ours reload", reload_ours),
                     ("stock tick", stock.tick), ("ours tick", ours.tick)):
        runs = 5 if "reload" in name else ticks
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        results[name] = samples
    assert ours.leading and len(ours.planner.jobs) >= tasks, (ours.leading, len(ours.planner.jobs))
    print(f"\n1. {tasks:,} enabled periodic tasks")
    print("| measure | stock DatabaseScheduler | LeasedScheduler | ratio ours/stock |")
    print("|---|---:|---:|---:|")
    for what in ("reload", "tick"):
        s, o = results[f"stock {what}"], results[f"ours {what}"]
        sm, om = statistics.median(s), statistics.median(o)
        print(f"| {what} (median of {len(s)}) | {ms(sm)} | {ms(om)} | {om / sm:.2f} |")
        if what == "tick":
            print(f"| tick p99 | {ms(pct(s, 99))} | {ms(pct(o, 99))} | "
                  f"{pct(o, 99) / pct(s, 99):.2f} |")
    ours.close()


class Processes:
    def __init__(self, log_dir):
        from tests.support.processes import beat, wait_for_ping, worker

        self.env = {**os.environ, "LOG_LEVEL": "warning", "LOG_FORMAT": "json"}
        hostname = f"bench-{os.getpid()}@{socket.gethostname()}"
        self.services = [
            worker(self.env, log_dir, hostname, app="tests.support.probe", concurrency=4).start(),
            beat(self.env, log_dir).start(),
        ]
        wait_for_ping(self.env, hostname)

    def stop(self):
        for service in self.services:
            service.stop()


def probe_runs():
    from django.conf import settings

    from tests.support.probe import runs

    return runs(settings.CELERY_BROKER_URL)


def part_latency(rounds, log_dir):
    import datetime as dt

    from django.utils import timezone

    reset()
    anchor = timezone.now().replace(microsecond=0) + dt.timedelta(seconds=5)
    make_tasks(50, 10, "burst", task="tests.probe", anchor=anchor)
    procs = Processes(log_dir)
    try:
        time.sleep(5 + rounds * 10 + 3)
    finally:
        procs.stop()
    runs = [r for r in probe_runs() if (r["name"] or "").startswith("burst")]
    late = [r["at"] - dt.datetime.fromisoformat(r["slot"]).timestamp() for r in runs]
    slots = {r["slot"] for r in runs}
    print(f"\n2. 50 jobs due at the same instant, {len(slots)} instants, {len(late)} runs")
    print("| p50 | p99 | max |")
    print("|---:|---:|---:|")
    print(f"| {ms(pct(late, 50))} | {ms(pct(late, 99))} | {ms(max(late))} |")


def part_change(trials, log_dir):
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django_celery_beat.models import PeriodicTask

    from tests.support.scenario import change_form_data

    reset()
    make_tasks(1, 1, "change", task="tests.probe")
    task = PeriodicTask.objects.get()
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"

    def by_admin(marker):
        data = change_form_data(client.get(url).context)
        data["kwargs"] = json.dumps({"marker": marker})
        response = client.post(url, data)
        assert response.status_code == 302, response.status_code

    def by_update(marker):
        PeriodicTask.objects.filter(pk=task.pk).update(kwargs=json.dumps({"marker": marker}))

    procs = Processes(log_dir)
    results = {}
    try:
        time.sleep(3)
        for how, change in (("admin save", by_admin), ("QuerySet.update()", by_update)):
            samples = []
            for trial in range(trials):
                marker = f"{how}-{trial}"
                changed_at = time.time()
                change(marker)
                deadline = changed_at + 30
                seen = None
                while seen is None and time.time() < deadline:
                    time.sleep(0.05)
                    seen = next((r["at"] for r in probe_runs()
                                 if r["kwargs"].get("marker") == marker), None)
                samples.append(None if seen is None else seen - changed_at)
            results[how] = samples
    finally:
        procs.stop()
    print(f"\n3. Change to effect, {trials} trials each")
    print("| how | within 5 s | p50 | max |")
    print("|---|---:|---:|---:|")
    for how, samples in results.items():
        ok = [s for s in samples if s is not None]
        within = sum(1 for s in ok if s <= 5)
        print(f"| {how} | {within} of {len(samples)} | {ms(pct(ok, 50))} | {ms(max(ok))} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()

    import tempfile

    import redis

    start_django()
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-scheduler-"))
    print(f"PostgreSQL {settings.DATABASES['default']['NAME']}, broker "
          f"{settings.CELERY_BROKER_URL}, logs {log_dir}")
    part_tick_and_reload(args.tasks, args.ticks)
    part_latency(args.rounds, log_dir)
    part_change(args.trials, log_dir)
    reset()


if __name__ == "__main__":
    main()
