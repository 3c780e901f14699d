"""The dead-letter retention job."""

import datetime as dt

import structlog
from celery import shared_task
from django.conf import settings
from django.utils import timezone

from deadletters.models import DeadLetter, Delivery

log = structlog.get_logger(__name__)


@shared_task(name="deadletters.prune_dead_letters")
def prune_dead_letters(older_than_days: int | None = None):
    """Delete resolved and ignored dead letters decided more than ``older_than_days`` ago
    (default ``DEADLETTERS_RETENTION_DAYS``), and delivery counters older than that. Pending
    dead letters are never deleted."""
    if older_than_days is None:
        older_than_days = settings.DEADLETTERS_RETENTION_DAYS
    if not isinstance(older_than_days, int) or isinstance(older_than_days, bool) or (
        older_than_days < 1
    ):
        raise ValueError(f"older_than_days must be a whole number of days >= 1, "
                         f"got {older_than_days!r}")
    now = timezone.now()
    pruned, _ = DeadLetter.objects.prunable(now=now, older_than_days=older_than_days).delete()
    counters, _ = Delivery.objects.filter(
        first_at__lt=now - dt.timedelta(days=older_than_days)
    ).delete()
    log.info("deadletters.pruned", dead_letters=pruned, delivery_counters=counters,
             older_than_days=older_than_days)
    return {"job": "prune_dead_letters", "pruned": pruned, "delivery_counters": counters}
