"""The beat scheduler: one active leader, every slot sent once, proof of life on every tick.

Configured as ``CELERY_BEAT_SCHEDULER = "scheduling.beat:LeasedScheduler"``. Each tick:

1. **Schedule version.** Read ``ScheduleVersion`` (one row, bumped by database triggers on any
   change to the periodic task and schedule tables, however made); reload when it moved.
2. **Lease.** Renew the leader lease by compare-and-set, or take it if it has expired. A beat
   without it stands by: it keeps ticking and reloading, and takes over when the lease expires
   (at once if the leader stopped cleanly and released it).
3. **Heartbeat.** Record that this beat is alive, whether it leads, and the version it loaded.
4. **Dispatch** (leader only). For each job whose next slot has come, apply the catch-up and
   overlap policies and send through ``scheduling.dispatch`` (ledger row first).

Next slots are computed from the ledger (the last slot handled per job), never from
``last_run_at``, so a new leader or a restarted beat continues exactly where the ledger ends.
"""

from __future__ import annotations

import datetime as dt
import heapq
import os
import secrets
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import structlog
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from scheduling import slots
from scheduling.beat_models import (
    BeatHeartbeat,
    BeatLease,
    Dispatch,
    JobPolicy,
    ScheduleVersion,
)
from scheduling.dispatch import dispatch_many, lock_timelines, resend_reserved

log = structlog.get_logger(__name__)

LEASE_NAME = "default"
#: A slot at most this late is on time, whatever the catch-up window (tick jitter, a slow query).
ON_TIME = dt.timedelta(seconds=10)
#: Reserved-but-unconfirmed ledger rows older than this belong to a beat that died mid-send.
RESEND_AFTER = dt.timedelta(seconds=15)
#: A full reload even without a version change, in case a trigger was dropped by hand.
FULL_RELOAD_EVERY = 300.0
#: How often the leader pings the dead-man's switch URL.
DEADMAN_EVERY = dt.timedelta(seconds=60)
#: Heartbeat rows of beats that stopped ticking this long ago are deleted.
HEARTBEAT_RETENTION = dt.timedelta(days=7)


@dataclass(order=True)
class _Due:
    at: dt.datetime
    name: str = field(compare=True)


@dataclass
class Job:
    model: PeriodicTask
    schedule: object
    policy: JobPolicy
    last: dt.datetime | None = None  # the last slot handled (ledger), or the anchor before any

    @property
    def name(self) -> str:
        return self.model.name


_tokens: dict[int, str] = {}


def identity() -> str:
    """``host:pid:random``, the same for every scheduler object of one process (celery beat
    builds a throwaway one for its banner), new after a fork or restart."""
    token = _tokens.setdefault(os.getpid(), secrets.token_hex(4))
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


def anchor(model: PeriodicTask, policy: JobPolicy, last_slot: dt.datetime | None) -> dt.datetime:
    """Where a job's timeline continues: its last ledger slot, but never before it was resumed
    or started; a job with no history counts from its last edit."""
    candidates = [last_slot or model.date_changed]
    if policy.resumed_at:
        candidates.append(policy.resumed_at)
    if model.start_time:
        candidates.append(model.start_time - dt.timedelta(microseconds=1))
    return max(candidate for candidate in candidates if candidate is not None)


def upcoming_runs(model: PeriodicTask, now: dt.datetime, count: int = 5) -> list[slots.Slot]:
    """The next ``count`` slots of ``model`` after ``now``, as beat will compute them (an
    interval counts from the job's last ledger slot)."""
    try:
        schedule = model.schedule
    except Exception:
        return []
    if isinstance(schedule, slots.schedules.schedule):
        last = Dispatch.objects.last_slots([model.pk]).get(model.pk)
        policy = getattr(model, "policy", None) or JobPolicy(periodic_task=model)
        start = anchor(model, policy, last)
        every = schedule.run_every
        if start < now:
            start += int((now - start) / every) * every
        return slots.upcoming(schedule, start, count)
    return slots.upcoming(schedule, now, count)


class LeasedScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler with a leader lease, ledger and heartbeat."""

    def __init__(self, *args, clock=None, instance: str | None = None, **kwargs):
        self.clock = clock or timezone.now
        self.instance = instance or identity()
        self.ttl = dt.timedelta(seconds=settings.SCHEDULING_BEAT_LEASE_TTL)
        self.jobs: dict[str, Job] = {}
        self.loaded_version: int | None = None
        self.leading = False
        self._due: list[_Due] = []
        self._loaded_at = 0.0
        self._heartbeat_created = False
        self._closed = False
        self._resent_at: dt.datetime | None = None
        self._replan = False
        self._pinged_at: dt.datetime | None = None
        super().__init__(*args, **kwargs)
        self.max_interval = settings.SCHEDULING_BEAT_TICK

    # --- django-celery-beat hooks we replace ---------------------------------------------------
    def setup_schedule(self):
        """Nothing to install: schedules are data (seed_schedules), CELERY_BEAT_SCHEDULE is empty
        (a system check enforces it) and the result cleanup job is one of the seeded defaults."""

    @property
    def schedule(self):
        return {name: job.model for name, job in self.jobs.items()}

    def sync(self):
        """Nothing is kept in memory that the database does not already have (the ledger)."""

    @property
    def info(self):
        return (
            f"    . instance -> {self.instance}\n"
            f"    . lease ttl -> {self.ttl.total_seconds():.0f}s"
        )

    # --- the tick ------------------------------------------------------------------------------
    def tick(self, *args, **kwargs) -> float:
        now = self.clock()
        try:
            if not connection.in_atomic_block:  # (tests drive ticks inside a transaction)
                close_old_connections()
            self.refresh(now)
            was_leading = self.leading
            self.leading = self.take_lease(now)
            if self.leading and (not was_leading or self._replan):
                if not was_leading:
                    log.info("beat.leading", instance=self.instance)
                self.plan(now)  # continue from the ledger, not from what we knew as a standby
            elif was_leading and not self.leading:
                log.warning("beat.lost_lease", instance=self.instance)
            self.heartbeat(now)
            if not self.leading:
                return float(self.max_interval)
            if self._resent_at is None or now - self._resent_at >= RESEND_AFTER / 3:
                resend_reserved(older_than=now - RESEND_AFTER, app=self.app,
                                producer=self.producer)
                self._resent_at = now
            self.dispatch_due(now)
            self.ping_deadman(now)
        except (DatabaseError, InterfaceError) as exc:
            # Never dispatch on a lease we could not prove; retry on the next tick. The heartbeat
            # stops moving meanwhile, which is what the liveness check reports.
            self.leading = False
            log.error("beat.database_error", error=str(exc), instance=self.instance)
            return float(self.max_interval)
        except Exception as exc:
            # Broker down or a message that cannot be built: the ledger rows of what was not
            # sent were removed; plan again from the ledger so those slots are retried (within
            # the catch-up window) once sending works again. Beat itself keeps running.
            self._replan = True
            self.drop_connection()
            log.error("beat.send_failed", error=repr(exc), instance=self.instance)
            return float(self.max_interval)
        return self.sleep_for(now)

    def ping_deadman(self, now: dt.datetime) -> None:
        """Every minute, the leader pings ``SCHEDULING_DEADMAN_URL`` (in a thread, so a slow or
        failing monitor never delays a dispatch); an outside monitor notices when it stops."""
        url = settings.SCHEDULING_DEADMAN_URL
        if not url or (self._pinged_at and now - self._pinged_at < DEADMAN_EVERY):
            return
        self._pinged_at = now

        def ping():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    response.read(1024)
            except Exception as exc:
                log.warning("beat.deadman_failed", error=repr(exc))

        threading.Thread(target=ping, name="deadman-ping", daemon=True).start()

    def drop_connection(self) -> None:
        """Forget the broker connection and producer; the next send opens fresh ones."""
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            try:
                connection.release()
            except Exception:  # already broken: nothing to release
                pass

    def sleep_for(self, now: dt.datetime) -> float:
        if not self._due:
            return float(self.max_interval)
        return max(0.0, min(float(self.max_interval), (self._due[0].at - now).total_seconds()))

    # --- 1. schedule version -------------------------------------------------------------------
    def refresh(self, now: dt.datetime) -> None:
        version = ScheduleVersion.current()
        stale = time.monotonic() - self._loaded_at > FULL_RELOAD_EVERY
        if version == self.loaded_version and not stale:
            return
        self.load()
        if self.loaded_version is not None and version != self.loaded_version:
            log.info("beat.schedule_changed", version=version, jobs=len(self.jobs))
        self.loaded_version = version
        self._loaded_at = time.monotonic()
        if self.leading:
            self.plan(now)

    def load(self) -> None:
        models = PeriodicTask.objects.enabled().select_related(
            "crontab", "interval", "solar", "clocked", "policy"
        )
        jobs = {}
        for model in models:
            try:
                schedule = model.schedule
            except Exception as exc:  # a row whose schedule was deleted or cannot be built
                log.error("beat.bad_schedule", job=model.name, error=str(exc))
                continue
            policy = getattr(model, "policy", None) or JobPolicy(periodic_task=model)
            jobs[model.name] = Job(model, schedule, policy)
        self.jobs = jobs

    # --- 2. lease ------------------------------------------------------------------------------
    def take_lease(self, now: dt.datetime) -> bool:
        until = now + self.ttl
        leases = BeatLease.objects.filter(pk=LEASE_NAME)
        if leases.filter(holder=self.instance).update(renewed_at=now, expires_at=until):
            return True
        free = Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        taken = leases.filter(free).update(
            holder=self.instance, acquired_at=now, renewed_at=now, expires_at=until
        )
        if taken:
            return True
        dead = self.dead_local_holder(leases.values_list("holder", flat=True).first())
        if dead and leases.filter(holder=dead).update(
            holder=self.instance, acquired_at=now, renewed_at=now, expires_at=until
        ):
            BeatHeartbeat.objects.filter(instance=dead).update(is_leader=False, stopped_at=now)
            log.warning("beat.took_lease_from_dead_process", dead=dead, instance=self.instance)
            return True
        if not leases.exists():
            BeatLease.objects.bulk_create([BeatLease(name=LEASE_NAME)], ignore_conflicts=True)
            return self.take_lease(now)
        return False

    def dead_local_holder(self, holder: str | None) -> str | None:
        """The lease holder if it was a process on this host that no longer runs (a beat killed
        and restarted in place need not wait out the TTL); else None."""
        if not holder or holder == self.instance:
            return None
        host, _, rest = holder.partition(":")
        pid_text = rest.partition(":")[0]
        if host != socket.gethostname() or not pid_text.isdigit():
            return None
        pid = int(pid_text)
        if pid == os.getpid():
            return holder  # our pid, another token: that process is gone (restart as pid 1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return holder
        except PermissionError:
            return None  # alive, someone else's
        return None

    def release_lease(self) -> None:
        now = self.clock()
        BeatLease.objects.filter(pk=LEASE_NAME, holder=self.instance).update(
            holder="", expires_at=now
        )
        BeatHeartbeat.objects.filter(instance=self.instance).update(
            is_leader=False, stopped_at=now
        )

    def close(self):
        if not self._closed:
            self._closed = True
            try:
                self.release_lease()
                log.info("beat.released_lease", instance=self.instance)
            except (DatabaseError, InterfaceError) as exc:
                log.error("beat.release_failed", error=str(exc), instance=self.instance)
        super().close()

    # --- 3. heartbeat --------------------------------------------------------------------------
    def heartbeat(self, now: dt.datetime) -> None:
        fields = dict(
            last_tick_at=now, is_leader=self.leading, schedule_version=self.loaded_version
        )
        if self._heartbeat_created:
            BeatHeartbeat.objects.filter(instance=self.instance).update(**fields)
            return
        BeatHeartbeat.objects.filter(last_tick_at__lt=now - HEARTBEAT_RETENTION).delete()
        BeatHeartbeat.objects.update_or_create(
            instance=self.instance,
            defaults=dict(fields, hostname=socket.gethostname(), pid=os.getpid(), started_at=now),
        )
        self._heartbeat_created = True

    # --- 4. dispatch ---------------------------------------------------------------------------
    def plan(self, now: dt.datetime) -> None:
        """Set each job's last handled slot from the ledger and rebuild the due heap."""
        self._replan = False
        last_slots = Dispatch.objects.last_slots([job.model.pk for job in self.jobs.values()])
        self._due = []
        for job in self.jobs.values():
            job.last = anchor(job.model, job.policy, last_slots.get(job.model.pk))
            self.push(job)
        heapq.heapify(self._due)

    def push(self, job: Job) -> None:
        try:
            at = slots.next_slot(job.schedule, job.last)
        except Exception as exc:
            log.error("beat.next_slot_failed", job=job.name, error=str(exc))
            return
        if at is not None:
            heapq.heappush(self._due, _Due(at, job.name))

    def dispatch_due(self, now: dt.datetime) -> None:
        """Pop every job whose next slot has come, apply the policies, send in one batch."""
        due_jobs = []
        while self._due and self._due[0].at <= now:
            job = self.jobs.get(heapq.heappop(self._due).name)
            if job is not None:
                due_jobs.append(job)
        if not due_jobs:
            return
        running = self.running([job.model.pk for job in due_jobs], now)
        to_send = []
        for job in due_jobs:
            slot = self.decide(job, now, running)
            if slot is not None:
                to_send.append((job.model, slot))
        sent = dispatch_many(to_send, now=now, by=self.instance, app=self.app,
                             producer=self.producer)
        if sent:
            ids = [row.periodic_task_id for row in sent]
            PeriodicTask.objects.filter(pk__in=ids).update(
                last_run_at=now, total_run_count=F("total_run_count") + 1
            )
            one_off = [row.periodic_task_id for row in sent if row.periodic_task.one_off]
            if one_off:
                PeriodicTask.objects.filter(pk__in=one_off).update(enabled=False)
        for job in due_jobs:
            self.push(job)

    def decide(self, job: Job, now: dt.datetime, running: set[int]) -> dt.datetime | None:
        """Apply the catch-up and overlap policies to ``job``'s due slots: the slot to send now,
        or None. Slots not sent are recorded in the ledger (missed or skipped)."""
        model = job.model
        if model.expires and now >= model.expires:
            job.last = now  # expired: nothing more is due (stock beat disables the row)
            return None
        due = slots.latest_due(job.schedule, job.last, now)
        if due is None:
            return None
        on_time = now - due.latest <= max(job.policy.window(), ON_TIME)
        if not on_time:
            self.record_missed(job, due.first, due.latest, due.count, now)
            job.last = due.latest
            return None
        if due.before_latest is not None:
            self.record_missed(job, due.first, due.before_latest, due.count - 1, now)
        job.last = due.latest
        if job.policy.overlap == JobPolicy.Overlap.SKIP and model.pk in running:
            self.record_skipped(job, due.latest, now)
            return None
        return due.latest

    def running(self, task_ids: list[int], now: dt.datetime) -> set[int]:
        """Jobs among ``task_ids`` with a run started and not finished within the hard limit."""
        limit = dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
        started = Dispatch.objects.filter(periodic_task_id__in=task_ids).running(
            since=now - limit
        )
        return {periodic_task_id for periodic_task_id, _ in started.values()}

    def record(self, job: Job, slot: dt.datetime, kind: str, now: dt.datetime, **extra) -> None:
        Dispatch.objects.bulk_create(
            [
                Dispatch(
                    periodic_task=job.model, slot=slot, kind=kind,
                    state=Dispatch.State.NOT_SENT, task_id=None, task_name=job.model.task,
                    dispatched_by=self.instance, dispatched_at=now, **extra,
                )
            ],
            ignore_conflicts=True,  # another beat recorded it first: same conclusion
        )

    def record_skipped(self, job, slot, now) -> None:
        """Record ``slot`` as skipped (overlap), unless another beat handled it meanwhile: a beat
        that stalled mid-tick (a broker reconnect can block it for seconds) and lost the lease
        may find the slot inside the new leader's missed range (found by the fault suite)."""
        with transaction.atomic():
            handled = lock_timelines([job.model.pk]).get(job.model.pk)
            if handled is not None and handled >= slot:
                return
            self.record(job, slot, Dispatch.Kind.SKIPPED, now)
        log.warning("beat.skipped_overlap", job=job.name, slot=slot.isoformat())

    def record_missed(self, job, first, last, count, now) -> None:
        """Record slots ``first``..``last`` as missed, minus any another beat handled meanwhile
        (under the job's row lock, like every ledger insert for a schedule slot)."""
        with transaction.atomic():
            handled = lock_timelines([job.model.pk]).get(job.model.pk)
            if handled is not None and handled >= first:
                if handled >= last:
                    return
                remaining = slots.latest_due(job.schedule, handled, last)
                if remaining is None:
                    return
                first, count = remaining.first, remaining.count
            self.record(job, last, Dispatch.Kind.MISSED, now, missed_from=first,
                        missed_count=count)
        log.warning(
            "beat.missed", job=job.name, first=first.isoformat(), last=last.isoformat(),
            count=count,
        )
