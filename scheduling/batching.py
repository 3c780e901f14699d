"""Set-based work in bounded batches by primary key.

Each batch is one short transaction over at most ``batch_size`` rows of the queryset, found by
keyset pagination on the primary key (never OFFSET over the table, never one statement over the
whole table, never a per-row save). The queryset's own filter is applied again inside each
batch's write, so a row that stopped matching between the read and the write is left alone and a
second run is a no-op.

On Celery's soft time limit the run stops between batches: committed batches stay, the batch in
flight rolls back, and the result says it was partial.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import QuerySet


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
    on_batch: Callable[[int, float], None] | None = None,
) -> BatchResult:
    """Apply ``apply(chunk) -> rows changed`` to ``queryset`` in primary-key batches.

    Steps per batch:
    1. find the primary key of the batch's last row (``LIMIT 1 OFFSET batch_size - 1`` after
       the previous batch's last key, so the read is bounded by the batch, not the table);
    2. in one transaction, apply the change to matching rows in (previous key, that key];
    3. stop when fewer than ``batch_size`` rows were left.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    result = BatchResult()
    ordered = queryset.order_by("pk")
    last_pk = None
    try:
        while True:
            started = time.perf_counter()
            window = ordered if last_pk is None else ordered.filter(pk__gt=last_pk)
            upper = list(window.values_list("pk", flat=True)[batch_size - 1 : batch_size])
            chunk = window.filter(pk__lte=upper[0]) if upper else window
            with transaction.atomic(using=queryset.db):
                changed = apply(chunk)
            result.changed += changed
            result.batches += 1
            if on_batch is not None:
                on_batch(changed, time.perf_counter() - started)
            if not upper:
                return result
            last_pk = upper[0]
    except SoftTimeLimitExceeded:
        # Raised asynchronously by the worker; the batch in flight rolled back with its atomic.
        result.partial = True
        return result
