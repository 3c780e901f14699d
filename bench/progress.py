"""Benchmark: what per-batch progress costs a job (each batch adds its count to the run's ledger
row, inside the batch's transaction).

``expire_coupons`` over N due coupons, with and without the progress writer, alternating, best of
3 rounds each, twice: with the default adaptive batching (few large batches) and with batches
fixed at 50 keys (the worst case: many small batches, where the extra UPDATE weighs most).
Per-batch cost = (time with - time without) / batches.

    python bench/progress.py [--rows 200000] [--rounds 3]
"""

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import configure, disabled_job, start_django  # noqa: E402

configure(LOG_LEVEL="warning")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start_django()
    from types import SimpleNamespace

    from django.db import connection
    from django.utils import timezone

    from scheduling.beat import Dispatch
    from scheduling.billing import demo
    from scheduling.billing.models import Coupon
    from scheduling.billing.tasks import batching_options
    from scheduling.engine import ledger

    job = disabled_job("bench-progress", "scheduling.expire_coupons")

    def reset(now):
        with connection.cursor() as cur:
            cur.execute(f"TRUNCATE {Coupon._meta.db_table} RESTART IDENTITY")
        demo.seed_coupons(args.rows, args.rows, now)
        with connection.cursor() as cur:
            cur.execute(f"VACUUM ANALYZE {Coupon._meta.db_table}")
            cur.execute("CHECKPOINT")

    def one(batching, progress: bool, n: int):
        now = timezone.now()
        reset(now)
        in_batch = None
        if progress:
            task_id = f"bench-progress-{n}"
            Dispatch.objects.create(periodic_task=job, slot=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
                                    + dt.timedelta(seconds=n), task_id=task_id,
                                    task_name="scheduling.expire_coupons", state="sent")
            in_batch = ledger.progress_writer(SimpleNamespace(
                id=task_id, scheduled_slot="2030-01-01T00:00:00+00:00"))
        started = time.perf_counter()
        result = Coupon.objects.expire_due(now=now, in_batch=in_batch, **batching)
        seconds = time.perf_counter() - started
        assert result.changed == args.rows, result
        if progress:
            row = Dispatch.objects.get(task_id=task_id)
            assert (row.rows_done, row.batches_done) == (result.changed, result.batches), row
        return seconds, result.batches

    print(f"expire_coupons over {args.rows:,} due coupons, best of {args.rounds} alternating "
          "rounds\n")
    print("| batching | batches | without progress | with progress | difference | per batch |")
    print("|---|---:|---:|---:|---:|---:|")
    n = 0
    for label, batching in (("adaptive (default)", batching_options()),
                            ("fixed at 50 keys", {"batch_size": 50, "max_batch_size": 50})):
        times = {False: [], True: []}
        batches = 0
        for round_ in range(args.rounds):
            for progress in ((False, True) if round_ % 2 == 0 else (True, False)):
                n += 1
                seconds, batches = one(batching, progress, n)
                times[progress].append(seconds)
        without, with_ = min(times[False]), min(times[True])
        print(f"| {label} | {batches:,} | {without:.2f} s | {with_:.2f} s "
              f"| {100 * (with_ / without - 1):+.1f} % "
              f"| {1000 * (with_ - without) / batches:.3f} ms |", flush=True)
    Dispatch.objects.filter(periodic_task=job).delete()


if __name__ == "__main__":
    main()
