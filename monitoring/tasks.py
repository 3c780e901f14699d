"""Monitoring's periodic jobs (seeded like the others)."""

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from scheduling.beat import Dispatch


@shared_task(name="monitoring.evaluate_alerts")
def evaluate_alerts():
    """Evaluate every subject and notify on state changes. (When beat itself is down this job is
    not sent either: run ``check_scheduler_liveness --alert`` from cron or the orchestrator.)"""
    from monitoring.alerts import evaluate_alerts as run

    return {"job": "evaluate_alerts", "flips": run(timezone.now())}


@shared_task(name="monitoring.prune_run_records")
def prune_run_records(older_than_days: int | None = None):
    """Delete ledger rows older than ``MONITORING_RUN_RETENTION_DAYS``, in bounded chunks,
    always keeping each job's newest row: beat continues its timeline from it. (The task's
    stored name is kept from when the ledger was called "run records".)"""
    days = older_than_days if older_than_days is not None else (
        settings.MONITORING_RUN_RETENTION_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or days < 1:
        raise ValueError(f"older_than_days must be a whole number of days >= 1, got {days!r}")
    cutoff = timezone.now() - dt.timedelta(days=days)
    return {"job": "prune_run_records", "pruned": Dispatch.objects.prune(before=cutoff)}
