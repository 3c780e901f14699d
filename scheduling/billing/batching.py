"""Set-based work in bounded batches by primary key.

Each batch is one short transaction over a primary-key range ``(lo, lo + size]``, with the
queryset's own filter applied inside the write. The range
makes every batch an index range scan of bounded size whatever the planner thinks of the filter
(keyset pagination with ``ORDER BY pk LIMIT`` over a filtered set can degrade into sorting every
due row once per batch when statistics are stale). Re-applying the filter in the write means a row
that stopped matching meanwhile is left alone, and a second run is a no-op.

The size adapts to the work, between 1 and ``max_batch_size`` keys starting at ``batch_size``:
it doubles while a batch takes under half of ``target_seconds`` and halves when one takes longer.
Cheap rows (a DELETE) get large batches, so the per-commit cost stops dominating; expensive rows
(an UPDATE that touches several indexes) get small ones, so no batch holds its locks for long.

On Celery's soft time limit the run stops between batches: the batch in flight finishes and is
counted, committed batches stay, and the result says it was partial. (The prefork pool raises
``SoftTimeLimitExceeded`` from a SIGUSR1 handler, so it can land anywhere, including just after
a COMMIT and before the count; ``_soft_limit_deferred`` holds it until the batch is accounted for.)
"""

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from billiard.pool import SIG_SOFT_TIMEOUT
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import Max, Min, QuerySet


@dataclass
class BatchResult:
    changed: int = 0
    batches: int = 0
    partial: bool = False


def run_in_batches(
    queryset: QuerySet,
    apply: Callable[[QuerySet], int],
    *,
    batch_size: int,
    max_batch_size: int | None = None,
    target_seconds: float = 0.05,
    on_batch: Callable[[int, float], None] | None = None,
    in_batch: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BatchResult:
    """Apply ``apply(chunk) -> rows changed`` to ``queryset`` in primary-key range batches.

    Steps:
    1. find the table's lowest and highest primary key (two index probes);
    2. per batch, in one transaction, apply the change to matching rows in ``(lo, lo + size]``;
    3. after a batch that matched nothing, jump to the next matching key, so sparse work on a
       large table costs a query per gap rather than a batch per ``batch_size`` keys.
    Rows inserted after step 1 above the highest key wait for the next run. ``in_batch(changed)``
    runs inside each batch that changed rows, before its commit (the run's progress, written
    with the work it counts); ``on_batch(changed, seconds)`` after it. ``clock`` measures
    each batch (seconds; injectable so the adaptation can be tested without real slowness).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    max_batch_size = max(batch_size, max_batch_size or batch_size)
    size = batch_size
    result = BatchResult()
    try:
        # The table's key bounds come straight off the primary-key index; empty stretches are
        # skipped by step 3 rather than found up front with a scan of every matching row.
        bounds = queryset.model._base_manager.using(queryset.db).aggregate(
            lo=Min("pk"), hi=Max("pk")
        )
        if bounds["lo"] is None:
            return result
        lo, hi = bounds["lo"] - 1, bounds["hi"]  # lo is exclusive
        while lo < hi:
            started = clock()
            upper = min(lo + size, hi)
            with _soft_limit_deferred():
                with transaction.atomic(using=queryset.db):
                    changed = apply(queryset.filter(pk__gt=lo, pk__lte=upper))
                    if changed and in_batch is not None:
                        in_batch(changed)  # in the batch's transaction: counted iff committed
                result.changed += changed
                result.batches += 1
            elapsed = clock() - started
            if on_batch is not None:
                on_batch(changed, elapsed)
            if elapsed > target_seconds:
                size = max(1, size // 2)
            elif changed and elapsed < target_seconds / 2:
                size = min(max_batch_size, size * 2)
            lo = upper
            if not changed and lo < hi:
                following = queryset.filter(pk__gt=lo, pk__lte=hi).aggregate(next=Min("pk"))
                if following["next"] is None:
                    break
                lo = following["next"] - 1
        return result
    except SoftTimeLimitExceeded:
        result.partial = True
        return result


@contextmanager
def _soft_limit_deferred():
    """Hold the worker's soft-limit signal while a batch commits and is counted; deliver it after.

    Only where Python lets us (the main thread, with a Python-level handler installed, as in a
    prefork pool child); elsewhere this does nothing and the limit lands as usual.
    """
    if SIG_SOFT_TIMEOUT is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = signal.getsignal(SIG_SOFT_TIMEOUT)
    if not callable(handler):
        yield
        return
    pending = []
    signal.signal(SIG_SOFT_TIMEOUT, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, handler)
        if pending:
            handler(*pending[0])  # raises SoftTimeLimitExceeded, now between batches
