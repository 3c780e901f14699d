"""The billing maintenance jobs. Thin: validate arguments, take ``now`` once, call the queryset.

Task names are explicit and stable: stored schedules hold these strings, so renaming a module
must not break them.
"""

import time

import structlog
from celery import current_task, shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from scheduling.billing.batching import BatchResult
from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard
from scheduling.engine import ledger

log = structlog.get_logger(__name__)

MAX_WITHIN_DAYS = 3650
MAX_OLDER_THAN_DAYS = 3650

# Options every maintenance job shares. Late acknowledgement plus reject-on-worker-lost means a
# job whose worker dies mid-run is redelivered rather than forgotten; the jobs are idempotent,
# so running one again is safe. Only transient connection errors are retried, with backoff;
# anything else (bad arguments included) is a permanent failure.
JOB_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError, BrokerOperationalError),
    "max_retries": 5,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
}


class InvalidJobArguments(ValueError):
    """A job was called with arguments it can never accept: a permanent error, not retried."""


def validate_days(name: str, value, *, minimum: int, maximum: int) -> int:
    # bool is an int in Python; True days is a typo, not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobArguments(
            f"{name} must be a whole number of days, got {value!r} ({type(value).__name__})"
        )
    if not minimum <= value <= maximum:
        raise InvalidJobArguments(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def batching_options() -> dict:
    """The batch sizing every job uses, from settings (also what the benchmark runs with)."""
    return {
        "batch_size": settings.SCHEDULING_BATCH_SIZE,
        "max_batch_size": settings.SCHEDULING_BATCH_MAX,
        "target_seconds": settings.SCHEDULING_BATCH_TARGET_MS / 1000,
    }


def _job_batching() -> dict:
    """``batching_options`` plus, for a scheduled run, its progress: each batch adds its count
    to the run's ledger row in the batch's own transaction."""
    request = current_task.request if current_task else None
    return {**batching_options(), "in_batch": ledger.progress_writer(request)}


def _finish(job: str, count_name: str, result: BatchResult, now, started: float, **params):
    """Log one event for the run and return its counts (JSON-safe: it is stored as the result)."""
    outcome = {
        "job": job,
        count_name: result.changed,
        "batches": result.batches,
        "partial": result.partial,
        "now": now.isoformat(),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        **params,
    }
    if result.partial:
        log.warning("job.partial", reason="soft time limit reached", **outcome)
    else:
        log.info("job.finished", **outcome)
    return outcome


@shared_task(name="scheduling.expire_coupons", **JOB_OPTIONS)
def expire_coupons():
    started, now = time.monotonic(), timezone.now()
    result = Coupon.objects.expire_due(now=now, **_job_batching())
    return _finish("expire_coupons", "expired", result, now, started)


def check_within_days(within_days=30) -> int:
    return validate_days("within_days", within_days, minimum=0, maximum=MAX_WITHIN_DAYS)


def check_older_than_days(older_than_days=7) -> int:
    # At least one day: 0 would delete checkouts customers are in the middle of.
    return validate_days("older_than_days", older_than_days, minimum=1,
                         maximum=MAX_OLDER_THAN_DAYS)


# ``argument_check``: the job's own argument rules, run by the admin when a schedule is saved
# and by beat before it sends, so a wrong value fails at once with this message rather than at
# run time. Celery sets decorator options as attributes of the task class: a staticmethod, so
# it is not bound to the task.
@shared_task(name="scheduling.flag_expiring_cards",
             argument_check=staticmethod(check_within_days), **JOB_OPTIONS)
def flag_expiring_cards(within_days=30):
    within_days = check_within_days(within_days)
    started, now = time.monotonic(), timezone.now()
    result = PaymentCard.objects.flag_expiring(
        now=now, within_days=within_days, **_job_batching()
    )
    return _finish("flag_expiring_cards", "flagged", result, now, started, within_days=within_days)


@shared_task(name="scheduling.delete_stale_checkouts",
             argument_check=staticmethod(check_older_than_days), **JOB_OPTIONS)
def delete_stale_checkouts(older_than_days=7):
    older_than_days = check_older_than_days(older_than_days)
    started, now = time.monotonic(), timezone.now()
    result = CheckoutSession.objects.delete_stale(
        now=now, older_than_days=older_than_days, **_job_batching()
    )
    return _finish(
        "delete_stale_checkouts", "deleted", result, now, started, older_than_days=older_than_days
    )
