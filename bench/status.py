"""Benchmark: the status of every job at 100, 1,000 and 5,000 enabled jobs with 20 ledger rows
each: ``check_scheduler_liveness``'s evaluation, ``/health/scheduler`` (cache off), ``/metrics``
and the dashboard page, each timed (best of 3) with its query count.

    python bench/status.py [--sizes 100,1000,5000]     (make bench-status)
"""

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import configure, start_django  # noqa: E402

STATIC = tempfile.mkdtemp(prefix="bench-static-")
configure(HEALTH_TOKEN="bench-token", MONITORING_HEALTH_CACHE="0", DJANGO_STATIC_ROOT=STATIC)
#: A registered task without an outcome check: the outcome checks (billing jobs only) cost one
#: query per billing job and are measured by the seeded jobs, not by thousands of copies.
TASK = "monitoring.prune_run_records"


def fill(count):
    from django.utils import timezone
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from scheduling.beat import Dispatch, WorkerProcess, registered_task_names

    PeriodicTask.objects.all().delete()
    now = timezone.now()
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.bulk_create([
        PeriodicTask(name=f"bench-{i:05d}", task=TASK, interval=every)
        for i in range(count)])
    rows = []
    for model in PeriodicTask.objects.all():
        for k in range(20):
            slot = now - dt.timedelta(minutes=20 - k)
            rows.append(Dispatch(periodic_task=model, slot=slot, state="succeeded",
                                 task_id=f"{model.pk}-{k}", task_name=model.task,
                                 dispatched_at=slot, started_at=slot,
                                 finished_at=slot + dt.timedelta(seconds=1)))
    Dispatch.objects.bulk_create(rows, batch_size=5000)
    WorkerProcess.objects.update_or_create(hostname="bench@host", defaults={
        "pid": 1, "started_at": now, "last_seen_at": now + dt.timedelta(hours=1),
        "queues": [{"name": "celery", "exchange": "celery", "type": "direct",
                    "routing_key": "celery"}], "tasks": sorted(registered_task_names())})
    # Statistics as autovacuum keeps them on a live database (right after a bulk insert the
    # planner has none and guesses its plans).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def measure(label, call):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    best, queries = None, 0
    for _ in range(3):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            call()
            took = time.perf_counter() - started
        best = took if best is None else min(best, took)
        queries = len(captured)
    return label, best, queries


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000,5000")
    args = parser.parse_args()
    start_django()
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    from monitoring.liveness import evaluate

    user, _ = get_user_model().objects.get_or_create(username="bench-staff", is_staff=True,
                                                      is_superuser=True)
    client = Client()
    client.force_login(user)
    token = {"HTTP_AUTHORIZATION": "Bearer bench-token"}
    print("| jobs | part | best of 3 | queries |")
    print("|---:|---|---:|---:|")
    for size in [int(s) for s in args.sizes.split(",")]:
        fill(size)
        for label, call in (
            ("check_scheduler_liveness evaluation", lambda: evaluate(timezone.now())),
            ("/health/scheduler", lambda: client.get("/health/scheduler", **token)),
            ("/metrics", lambda: client.get("/metrics", **token)),
            ("/monitoring/ (first page)", lambda: client.get("/monitoring/")),
            ("reference: periodic task admin list",
             lambda: client.get("/admin/django_celery_beat/periodictask/")),
        ):
            name, took, queries = measure(label, call)
            print(f"| {size:,} | {name} | {took:.2f} s | {queries} |", flush=True)


if __name__ == "__main__":
    main()
