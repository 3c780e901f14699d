"""Benchmark: dead-letter capture overhead and the admin changelist at 200,000 dead letters.

Run by hand (`make bench-deadletters`) on PostgreSQL (BENCH_DATABASE_URL, created and migrated
if missing). Two parts:

1. **Capture overhead**: a failing task run in-process (``Task.apply``, the worker's own trace
   code) N times with the project's base class (dead letter recorded) and with a plain Celery
   task (nothing recorded); and a succeeding ``acks_late`` task with and without the delivery
   counter (the poison guard's one upsert).
2. **Changelist**: 200,000 dead letters (set-based insert, then ANALYZE); server time of the
   admin changelist (Django test client, superuser) unfiltered, filtered by status, by task name,
   by exception type and by date, median of 5; and the query count at 50 and 200 rows per page.

    python bench/deadletters.py [--rows 200000] [--runs 300]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import configure, start_django  # noqa: E402

configure()


def ms(seconds):
    return f"{seconds * 1000:.2f} ms"


def timed(fn, runs):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def part_capture(runs):
    from celery import Task

    from deadletters.models import DeadLetter, Delivery
    from project.celery import app

    def boom():
        raise RuntimeError("fails for good")

    def ok():
        return 1

    captured = app.task(name="bench.fail_captured", shared=False)(boom)
    plain = app.task(name="bench.fail_plain", base=Task, shared=False)(boom)
    late = app.task(name="bench.ok_late", acks_late=True, shared=False)(ok)
    early = app.task(name="bench.ok_plain", shared=False)(ok)
    DeadLetter.objects.all().delete()
    Delivery.objects.all().delete()
    results = {
        "failing, plain Celery task": timed(lambda: plain.apply(), runs),
        "failing, base class (dead letter recorded)": timed(lambda: captured.apply(), runs),
        "succeeding, not acks_late": timed(lambda: early.apply(), runs),
        "succeeding, acks_late (delivery counted)": timed(lambda: late.apply(), runs),
    }
    recorded = DeadLetter.objects.filter(task_name="bench.fail_captured").count()
    assert recorded == runs, recorded
    print(f"\n1. Capture overhead, median of {runs} in-process runs (Task.apply)")
    print("| task | time per run |")
    print("|---|---:|")
    for name, value in results.items():
        print(f"| {name} | {ms(value)} |")
    DeadLetter.objects.all().delete()
    Delivery.objects.all().delete()


def seed(rows):
    from django.db import connection

    from deadletters.models import DeadLetter

    DeadLetter.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO deadletters_deadletter (
                task_id, task_name, args, kwargs, replayable, not_replayable_reason, queue,
                exchange, exception_type, exception_message, traceback, retries, worker,
                failed_at, periodic_task_name, status, resolution_note, requeued_task_id)
            SELECT 'bench-' || i,
                   (ARRAY['scheduling.expire_coupons', 'scheduling.flag_expiring_cards',
                          'scheduling.delete_stale_checkouts', 'billing.charge_card'])[i %% 4 + 1],
                   '[]', '{"within_days": 30}', true, '', 'celery', '',
                   (ARRAY['RuntimeError', 'ValueError', 'billiard.exceptions.WorkerLostError',
                          'django.db.utils.OperationalError'])[i %% 4 + 1],
                   'failure number ' || i, repeat('Traceback line\n', 40), i %% 6,
                   'celery@worker-' || (i %% 8), now() - (i || ' seconds')::interval, '',
                   (ARRAY['pending', 'ignored', 'resolved', 'requeued'])[(i / 7) %% 4 + 1], '', ''
            FROM generate_series(1, %s) AS i
            """,
            [rows],
        )
        cursor.execute("ANALYZE deadletters_deadletter")


def part_changelist(rows):
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from deadletters.admin import DeadLetterAdmin

    seed(rows)
    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(user)
    url = "/admin/deadletters/deadletter/"
    pages = {
        "unfiltered": "",
        "status = pending": "?status__exact=pending",
        "task name": "?task_name=scheduling.flag_expiring_cards",
        "exception type": "?exception_type=ValueError",
        "status + task name": "?status__exact=pending&task_name=billing.charge_card",
        "failed in the last 7 days": "?failed_at__gte=2020-01-01+00:00:00%2B00:00",
        "page 100": "?p=100",
    }
    print(f"\n2. Admin changelist with {rows:,} dead letters (server time, median of 5)")
    print("| page | server time | queries |")
    print("|---|---:|---:|")
    for name, query in pages.items():
        client.get(url + query)  # warm
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url + query)
        assert response.status_code == 200, (response.status_code, response.get("Location"))
        count = len(queries)
        value = timed(lambda q=query: client.get(url + q), 5)
        print(f"| {name} | {ms(value)} | {count} |")
    counts = {}
    for per_page in (50, 200):
        DeadLetterAdmin.list_per_page = per_page
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        counts[per_page] = len(queries)
    DeadLetterAdmin.list_per_page = 50
    print(f"\nQueries per changelist page: {counts[50]} at 50 rows, {counts[200]} at 200 rows.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    start_django()
    os.environ["LOG_LEVEL"] = "error"
    part_capture(args.runs)
    part_changelist(args.rows)


if __name__ == "__main__":
    main()
