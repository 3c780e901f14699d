"""Benchmark: each maintenance job versus one plain statement and a naive per-row ORM loop.

Run by hand on PostgreSQL (`make bench`; BENCH_DATABASE_URL selects the database, created and
migrated if missing; default postgres://postgres@127.0.0.1:5432/billing_bench). Every run starts
from freshly seeded, analysed tables of ROWS due rows (set-based seeding, seed_demo_data's code).

Reports rows/s, the job's time relative to the single statement (ratio <= 1.0 means the batched
job is no slower), the p99 duration of one batch transaction, peak Python memory (tracemalloc, at
two row counts to show it does not grow with the table), and the speed-up over the naive loop
(timed on a sample and extrapolated).

    python bench/jobs.py [--rows 1000000] [--sample 3000] [--small 100000]
"""

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench")
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-used-anywhere-else")


def ensure_database():
    import psycopg2
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        sys.exit("the benchmark runs on PostgreSQL: set BENCH_DATABASE_URL/DATABASE_URL")
    conn = psycopg2.connect(
        dbname="postgres",
        user=db["USER"],
        password=db["PASSWORD"],
        host=db["HOST"],
        port=db["PORT"] or 5432,
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if not cur.fetchone():
            cur.execute(f'CREATE DATABASE "{db["NAME"]}"')
    conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="second size for memory")
    parser.add_argument("--sample", type=int, default=3_000, help="rows timed in the naive loop")
    args = parser.parse_args()

    import django

    ensure_database()
    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from scheduling.billing import demo
    from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard

    call_command("migrate", verbosity=0)
    from scheduling.billing.tasks import batching_options

    batching = batching_options()

    def reset(model, seed, rows, now):
        with connection.cursor() as cur:
            cur.execute(f"TRUNCATE {model._meta.db_table} RESTART IDENTITY")
        seed(rows, rows, now)
        with connection.cursor() as cur:
            cur.execute(f"VACUUM ANALYZE {model._meta.db_table}")
            cur.execute("CHECKPOINT")  # every timed run starts from the same clean state

    jobs = [
        dict(
            name="expire_coupons",
            model=Coupon,
            seed=demo.seed_coupons,
            due=lambda now: Coupon.objects.due(now=now),
            job=lambda now, **kw: Coupon.objects.expire_due(now=now, **batching, **kw),
            single=lambda now: Coupon.objects.due(now=now).update(status="expired", expired_at=now),
            naive=lambda obj, now: (
                setattr(obj, "status", "expired"),
                setattr(obj, "expired_at", now),
                obj.save(),
            ),
        ),
        dict(
            name="flag_expiring_cards",
            model=PaymentCard,
            seed=demo.seed_cards,
            due=lambda now: PaymentCard.objects.expiring(now=now, within_days=30),
            job=lambda now, **kw: PaymentCard.objects.flag_expiring(
                now=now, within_days=30, **batching, **kw
            ),
            single=lambda now: PaymentCard.objects.expiring(now=now, within_days=30).update(
                expiry_flagged_at=now
            ),
            naive=lambda obj, now: (setattr(obj, "expiry_flagged_at", now), obj.save()),
        ),
        dict(
            name="delete_stale_checkouts",
            model=CheckoutSession,
            seed=demo.seed_checkouts,
            due=lambda now: CheckoutSession.objects.stale(now=now, older_than_days=7),
            job=lambda now, **kw: CheckoutSession.objects.delete_stale(
                now=now, older_than_days=7, **batching, **kw
            ),
            single=lambda now: CheckoutSession.objects.stale(now=now, older_than_days=7).delete()[
                0
            ],
            naive=lambda obj, now: obj.delete(),
        ),
    ]

    rows = args.rows
    print(
        f"# {rows:,} due rows per run, batching {batching}, PostgreSQL "
        f"{connection.pg_version // 10000}, naive loop sampled on {args.sample:,} rows\n"
    )
    table = [
        "| job | batched job rows/s | single statement rows/s | ratio job/single (time) "
        "| batch p99 | batches | peak Python memory (" + f"{args.small:,} / {rows:,} rows) "
        "| naive loop rows/s | job vs naive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for spec in jobs:
        now = timezone.now()
        # 1. The batched job.
        reset(spec["model"], spec["seed"], rows, now)
        batch_times = []
        started = time.perf_counter()
        result = spec["job"](now, on_batch=lambda _, seconds, out=batch_times: out.append(seconds))
        job_seconds = time.perf_counter() - started
        assert result.changed == rows and not result.partial, result
        assert spec["due"](now).count() == 0
        # 2. One statement over the whole set.
        reset(spec["model"], spec["seed"], rows, now)
        started = time.perf_counter()
        changed = spec["single"](now)
        single_seconds = time.perf_counter() - started
        assert changed == rows, changed
        # 3. The naive per-row loop, on a sample.
        reset(spec["model"], spec["seed"], rows, now)
        sample = list(spec["due"](now).order_by("pk")[: args.sample])
        started = time.perf_counter()
        for obj in sample:
            spec["naive"](obj, now)
        naive_rate = len(sample) / (time.perf_counter() - started)
        # 4. Peak Python memory of the job at two table sizes.
        peaks = []
        for size in (args.small, rows):
            reset(spec["model"], spec["seed"], size, now)
            tracemalloc.start()
            spec["job"](now)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()

        job_rate = rows / job_seconds
        p99 = statistics.quantiles(batch_times, n=100)[98] * 1000
        table.append(
            f"| {spec['name']} | {job_rate:,.0f} | {rows / single_seconds:,.0f} "
            f"| {job_seconds / single_seconds:.2f} | {p99:.1f} ms | {len(batch_times)} "
            f"| {peaks[0]:.2f} MB / {peaks[1]:.2f} MB | {naive_rate:,.0f} "
            f"| {job_rate / naive_rate:,.0f}x |"
        )
        print(table[-1], flush=True)
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
