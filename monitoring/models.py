"""Monitoring's own state: per-job thresholds (grace, max runtime) and alert state.

What ran and when is the ledger (``scheduling.beat.Dispatch``): beat writes a row per slot before
sending, the worker moves it from sent to succeeded/failed with what the job returned (whether a
run has started is read from django-celery-results).
"""

from django.conf import settings
from django.db import models
from django_celery_beat.models import PeriodicTask


class JobMonitor(models.Model):
    """Thresholds for one periodic job; a job without a row uses the defaults from settings."""

    periodic_task = models.OneToOneField(
        PeriodicTask, on_delete=models.CASCADE, primary_key=True, related_name="monitor"
    )
    grace = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Seconds a due run may take to be dispatched (else late), to start (else "
                  "queued), and leftover work may wait (outcome check). Empty: "
                  "MONITORING_GRACE.",
    )
    max_runtime = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Seconds a run may take before it is slow. Empty: CELERY_TASK_TIME_LIMIT.",
    )
    failures = models.PositiveSmallIntegerField(
        null=True, blank=True,
        help_text="This many failed runs in a row make the job failing. Empty: "
                  "MONITORING_FAILURES.",
    )

    class Meta:
        verbose_name = "monitoring threshold"

    def __str__(self):
        return f"thresholds of {self.periodic_task_id}"

    @property
    def grace_seconds(self) -> int:
        return self.grace if self.grace is not None else settings.MONITORING_GRACE

    @property
    def max_runtime_seconds(self) -> int:
        return self.max_runtime if self.max_runtime is not None else settings.CELERY_TASK_TIME_LIMIT

    @property
    def failures_threshold(self) -> int:
        return self.failures if self.failures is not None else settings.MONITORING_FAILURES


class AlertState(models.Model):
    """What was last notified about one subject ("beat", "job:<name>", "deadletters"), and the
    run of consecutive bad / good evaluations that decides the next notification."""

    subject = models.CharField(max_length=255, primary_key=True)
    notified = models.CharField(max_length=16, default="ok")  # "ok" or "bad"
    current = models.CharField(max_length=16, default="ok")
    reason = models.TextField(blank=True)
    bad_streak = models.PositiveIntegerField(default=0)
    good_streak = models.PositiveIntegerField(default=0)
    changed_at = models.DateTimeField(null=True)
    watermark = models.BigIntegerField(default=0)  # dead letters: highest id already notified

    def __str__(self):
        return f"{self.subject}: {self.notified}"
