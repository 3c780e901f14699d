"""What the scheduler engine keeps in the database: lease, heartbeats, schedule version, the
ledger (model ``Dispatch``), per-job policy, and the audit trail of schedule changes.

Imported by ``scheduling.models`` so Django finds these models (app label ``scheduling``; the
tables keep their names). Written only by the engine's modules: the ledger by
``scheduling.engine.ledger``.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

__all__ = ["BeatHeartbeat", "BeatLease", "Dispatch", "JobPolicy", "ScheduleChange",
           "ScheduleVersion", "WorkerProcess"]


class BeatLease(models.Model):
    """The single leader lease: only its holder dispatches.

    Taken and renewed by compare-and-set (``UPDATE … WHERE holder = me OR expires_at < now``),
    released on a clean stop by moving ``expires_at`` to now.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    acquired_at = models.DateTimeField(null=True)
    renewed_at = models.DateTimeField(null=True)
    expires_at = models.DateTimeField(null=True)

    def __str__(self):
        return f"lease {self.name} held by {self.holder or 'nobody'} until {self.expires_at}"


class BeatHeartbeat(models.Model):
    """One row per beat process, touched on every tick (the monitoring reads the freshest)."""

    instance = models.CharField(max_length=200, unique=True)  # host:pid:random
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_tick_at = models.DateTimeField()
    is_leader = models.BooleanField(default=False)
    schedule_version = models.BigIntegerField(null=True)  # ScheduleVersion it has loaded
    stopped_at = models.DateTimeField(null=True)

    class Meta:
        indexes = [
            # Consumer: liveness checks ("is any beat ticking?") read the newest heartbeats.
            models.Index(fields=["-last_tick_at"], name="heartbeat_last_tick_idx"),
        ]

    def __str__(self):
        return f"beat {self.instance}"


class ScheduleVersion(models.Model):
    """A counter bumped by database triggers on every schedule change, however it is made.

    django-celery-beat's own change marker (``PeriodicTasks``) moves only on ``Model.save()``;
    ``QuerySet.update()``, raw SQL and data migrations pass it by. The triggers (migration 0004)
    fire on the periodic task and schedule tables themselves, so beat sees every change on its
    next tick. A single row (id 1), read by primary key.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.BigIntegerField(default=0)
    changed_at = models.DateTimeField(null=True)

    def __str__(self):
        return f"schedule version {self.version}"

    @classmethod
    def current(cls) -> int:
        return cls.objects.filter(pk=1).values_list("version", flat=True).first() or 0


class DispatchQuerySet(models.QuerySet):
    def counting(self):
        """Rows that occupy a slot in the schedule's timeline (manual runs do not)."""
        return self.exclude(kind=Dispatch.Kind.MANUAL)

    def last_slots(self, task_ids) -> dict[int, dt.datetime]:
        rows = (
            self.counting()
            .filter(periodic_task_id__in=task_ids)
            .values("periodic_task_id")
            .annotate(last=models.Max("slot"))
        )
        return {row["periodic_task_id"]: row["last"] for row in rows}

    def unfinished(self):
        return self.filter(
            kind__in=[Dispatch.Kind.SCHEDULED, Dispatch.Kind.MANUAL],
            state__in=[Dispatch.State.RESERVED, Dispatch.State.SENT],
        )

    def running(self, *, since: dt.datetime) -> dict[str, tuple[int, dt.datetime]]:
        """Unfinished runs dispatched since ``since`` that a worker has started:
        ``{task_id: (periodic task id, started at)}``, from django-celery-results' STARTED row."""
        from django_celery_results.models import TaskResult

        rows = dict(self.unfinished().filter(dispatched_at__gte=since)
                    .values_list("task_id", "periodic_task_id"))
        started = TaskResult.objects.filter(task_id__in=list(rows), status="STARTED")
        return {task_id: (rows[task_id], at)
                for task_id, at in started.values_list("task_id", "date_started")}

    def prune(self, *, before: dt.datetime, chunk: int = 5000) -> int:
        """Delete rows with a slot before ``before``, always keeping each job's newest row (beat
        continues its timeline from it), ``chunk`` rows per statement; rows deleted."""
        newest = Dispatch.objects.filter(periodic_task_id=models.OuterRef("periodic_task_id"))
        old = self.annotate(
            job_last=models.Subquery(newest.order_by("-slot").values("slot")[:1])
        ).filter(slot__lt=before).filter(slot__lt=models.F("job_last"))
        deleted = 0
        while True:
            ids = list(old.values_list("pk", flat=True)[:chunk])
            if not ids:
                return deleted
            deleted += Dispatch.objects.filter(pk__in=ids).delete()[0]
            if len(ids) < chunk:
                return deleted


class Dispatch(models.Model):
    """The ledger: one row per (periodic task, slot), written *before* the task is sent.

    The unique constraint is the fence: a second beat, a stale leader or a restarted one that
    tries the same slot gets a conflict and skips it. Worker-side signal handlers move ``state``
    from sent to succeeded/failed by ``task_id`` (whether a run started is read from
    django-celery-results, see ``DispatchQuerySet.running``).
    """

    class Kind(models.TextChoices):
        SCHEDULED = "scheduled"
        MISSED = "missed"  # catch-up window passed; slots from missed_from to slot not sent
        SKIPPED = "skipped"  # previous run still running and the overlap policy is "skip"
        MANUAL = "manual"  # "run now" from the admin

    class State(models.TextChoices):
        RESERVED = "reserved"  # row written, message not yet confirmed sent
        SENT = "sent"  # until the run ends; whether it started is in django-celery-results
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        NOT_SENT = "not_sent"  # missed / skipped rows
        LOST = "lost"  # can never finish any more (``error`` says why); nothing waits for it
        EXPIRED = "expired"  # the message expired before a worker took it

    # SET_NULL: deleting a periodic task keeps its history (``job_name`` says whose it was).
    periodic_task = models.ForeignKey(PeriodicTask, null=True, on_delete=models.SET_NULL,
                                      related_name="+")
    job_name = models.CharField(max_length=200, blank=True,
                                help_text="The periodic task's name when the row was written.")
    slot = models.DateTimeField(help_text="When the run was due (nominal time).")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SCHEDULED)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RESERVED)
    task_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    task_name = models.CharField(max_length=255)
    missed_from = models.DateTimeField(null=True, blank=True)
    missed_count = models.PositiveIntegerField(null=True, blank=True)
    dispatched_by = models.CharField(max_length=200, blank=True)
    dispatched_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="What the run returned (counts).")
    error = models.TextField(blank=True, help_text="Why the run is lost, expired or failed.")
    # Progress, added by each batch in its own transaction (so a killed attempt's committed
    # work is counted, and the counts equal the rows changed across every attempt).
    rows_done = models.BigIntegerField(default=0, help_text="Rows changed so far, all attempts.")
    batches_done = models.PositiveIntegerField(default=0, help_text="Batches committed so far.")
    progress_at = models.DateTimeField(null=True, blank=True,
                                       help_text="When the last batch committed.")

    objects = DispatchQuerySet.as_manager()

    class Meta:
        verbose_name = "ledger entry"
        verbose_name_plural = "ledger"
        ordering = ["-slot"]
        constraints = [
            models.UniqueConstraint(fields=["periodic_task", "slot"], name="dispatch_one_per_slot"),
        ]
        indexes = [
            # Consumer: the leader re-sends rows a killed beat reserved but never confirmed.
            models.Index(fields=["dispatched_at"], condition=Q(state="reserved"),
                         name="dispatch_reserved_idx"),
            # Consumers: the overlap policy and monitoring ("is a run of this job unfinished?").
            models.Index(fields=["periodic_task", "dispatched_at"],
                         condition=Q(state__in=["reserved", "sent"]),
                         name="dispatch_unfinished_idx"),
            # Consumer: monitoring's "newest success of every job" (one index probe per job).
            models.Index(fields=["periodic_task", "-slot"], condition=Q(state="succeeded"),
                         name="dispatch_succeeded_idx"),
            # Consumer: monitoring's newest failed / lost / expired run of every job (rare
            # states: without it each probe walks the job's whole history).
            models.Index(fields=["periodic_task", "-slot"],
                         condition=Q(state__in=["failed", "lost", "expired"]),
                         name="dispatch_unsuccessful_idx"),
        ]

    def __str__(self):
        return f"{self.task_name} @ {self.slot:%Y-%m-%d %H:%M:%S} ({self.kind}, {self.state})"


class JobPolicy(models.Model):
    """Per periodic task: catch-up and overlap policy, and who paused or resumed it and why."""

    class Overlap(models.TextChoices):
        SKIP = "skip", "Skip the slot and record it"
        ALLOW = "allow", "Send it anyway"

    periodic_task = models.OneToOneField(
        PeriodicTask, on_delete=models.CASCADE, primary_key=True, related_name="policy"
    )
    catch_up_window = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=(
            "Seconds. After beat was down, a missed slot younger than this runs once; older ones "
            "are recorded as missed. Empty: SCHEDULING_CATCH_UP_WINDOW."
        ),
    )
    overlap = models.CharField(
        max_length=8,
        choices=Overlap.choices,
        default=Overlap.SKIP,
        help_text="When the previous run of this job is still running at the next slot.",
    )
    paused_at = models.DateTimeField(null=True, blank=True)
    paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    pause_reason = models.TextField(blank=True)
    resumed_at = models.DateTimeField(null=True, blank=True)
    resumed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    resume_reason = models.TextField(blank=True)

    class Meta:
        verbose_name = "job policy"
        verbose_name_plural = "job policies"
        permissions = [
            ("run_job_now", "Can run a periodic job now"),
            ("pause_job", "Can pause and resume a periodic job"),
        ]

    def __str__(self):
        return f"policy of {self.periodic_task_id}"

    def window(self) -> dt.timedelta:
        seconds = self.catch_up_window
        if seconds is None:
            seconds = settings.SCHEDULING_CATCH_UP_WINDOW
        return dt.timedelta(seconds=seconds)


class ScheduleChange(models.Model):
    """Audit trail: who changed which schedule, when, and which fields from what to what."""

    class Action(models.TextChoices):
        ADDED = "added"
        CHANGED = "changed"
        DELETED = "deleted"
        PAUSED = "paused"
        RESUMED = "resumed"
        RUN_NOW = "run_now", "run now"

    periodic_task = models.ForeignKey(
        PeriodicTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task_name = models.CharField(max_length=200, help_text="Periodic task name at the time.")
    action = models.CharField(max_length=16, choices=Action.choices)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    changes = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]}")
    reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-changed_at"]

    def __str__(self):
        return f"{self.task_name} {self.action} by {self.changed_by} at {self.changed_at}"


class WorkerProcessQuerySet(models.QuerySet):
    def live(self, now: dt.datetime):
        """Workers that stopped cleanly are out at once; one that died without a clean stop
        after ``SCHEDULING_WORKER_STALE`` seconds without a heartbeat."""
        stale = now - dt.timedelta(seconds=settings.SCHEDULING_WORKER_STALE)
        return self.filter(stopped_at__isnull=True, last_seen_at__gte=stale)


class WorkerProcess(models.Model):
    """The worker registry: one row per worker (by hostname), written by the worker itself when
    it starts, refreshed every ``SCHEDULING_WORKER_HEARTBEAT`` seconds, stamped on a clean stop.
    Monitoring reads which queues have a live consumer and which task names a live worker can
    run from here, without a broadcast to the workers."""

    hostname = models.CharField(max_length=255, unique=True)  # celery's node name, name@host
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list, help_text="[{name, exchange, type, routing_key}]")
    tasks = models.JSONField(default=list, help_text="Task names registered on the worker.")
    concurrency = models.PositiveIntegerField(null=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkerProcessQuerySet.as_manager()

    class Meta:
        verbose_name = "worker"
        ordering = ["hostname"]

    def __str__(self):
        return f"worker {self.hostname}"

    @property
    def queue_names(self) -> list[str]:
        return [queue.get("name", "") for queue in self.queues or ()]
