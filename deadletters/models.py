"""Dead letters: tasks that failed for good, kept with everything needed to replay them, each
ending in a person's decision (requeue or ignore)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class DeadLetterQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(status=DeadLetter.Status.PENDING)

    def pending_stats(self, *, now: dt.datetime) -> dict:
        """For monitoring: how many are pending and how old the oldest one is (seconds)."""
        stats = self.pending().aggregate(count=models.Count("pk"), oldest=models.Min("failed_at"))
        oldest = stats["oldest"]
        return {
            "pending": stats["count"],
            "oldest_pending_age": (now - oldest).total_seconds() if oldest else None,
        }

    def prunable(self, *, now: dt.datetime, older_than_days: int):
        """Resolved and ignored dead letters decided more than ``older_than_days`` ago. Pending
        (and requeued, still waiting for the outcome) ones are never pruned."""
        return self.filter(
            status__in=[DeadLetter.Status.RESOLVED, DeadLetter.Status.IGNORED],
            resolved_at__lt=now - dt.timedelta(days=older_than_days),
        )


class DeadLetter(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        REQUEUED = "requeued"  # sent again; becomes resolved when that run succeeds
        IGNORED = "ignored"
        RESOLVED = "resolved"

    task_id = models.CharField(max_length=255, unique=True)
    task_name = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    replayable = models.BooleanField(default=True)
    not_replayable_reason = models.CharField(max_length=255, blank=True)
    queue = models.CharField(max_length=255, blank=True)
    exchange = models.CharField(max_length=255, blank=True)
    exception_type = models.CharField(max_length=255)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    retries = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    failed_at = models.DateTimeField(default=timezone.now)
    periodic_task_name = models.CharField(max_length=200, blank=True)
    scheduled_slot = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution_note = models.TextField(blank=True)
    requeued_task_id = models.CharField(max_length=255, blank=True)
    requeued_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="requeued_as"
    )

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        ordering = ["-failed_at"]
        permissions = [
            ("requeue_deadletter", "Can requeue a dead letter"),
            ("ignore_deadletter", "Can ignore a dead letter"),
        ]
        indexes = [
            # Consumers: the admin changelist (newest first, filtered by status / task / type).
            models.Index(fields=["-failed_at"], name="deadletter_failed_idx"),
            models.Index(fields=["status", "-failed_at"], name="deadletter_status_idx"),
            models.Index(fields=["task_name", "-failed_at"], name="deadletter_task_idx"),
            models.Index(fields=["exception_type", "-failed_at"], name="deadletter_exc_idx"),
            # Consumer: pending_stats() (monitoring: count and oldest pending).
            models.Index(fields=["failed_at"], condition=Q(status="pending"),
                         name="deadletter_pending_idx"),
            # Consumer: prunable() (the retention job).
            models.Index(fields=["resolved_at"], condition=Q(status__in=["resolved", "ignored"]),
                         name="deadletter_closed_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "requeued", "ignored", "resolved"]),
                name="deadletter_status_valid",
            ),
        ]

    def __str__(self):
        return f"{self.task_name} [{self.task_id}] {self.status}"

    def claim(self, *, to: str, by, now: dt.datetime, note: str = "", **fields) -> bool:
        """Compare-and-set from pending to ``to``; False if someone else decided first."""
        changed = DeadLetter.objects.filter(pk=self.pk, status=self.Status.PENDING).update(
            status=to, resolved_by=by, resolved_at=now, resolution_note=note, **fields
        )
        if changed:
            self.status, self.resolved_by, self.resolved_at = to, by, now
            self.resolution_note = note
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(changed)


class Delivery(models.Model):
    """How many times a message (task id and retry number) was delivered to a worker; the
    poison-message guard in ``deadletters.base``. Pruned with the dead letters."""

    key = models.CharField(max_length=300, primary_key=True)
    count = models.PositiveIntegerField(default=0)
    first_at = models.DateTimeField()

    def __str__(self):
        return f"{self.key}: {self.count}"
