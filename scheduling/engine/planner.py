"""Planning: which jobs exist, when each is next due, and what to do with a due slot.

The catch-up / overlap decision is a pure function (``decide``) returning a ``Decision``; the
``Planner`` keeps the loaded jobs and a heap of their next slots. Next slots continue from the
ledger (each job's last handled slot), never from ``last_run_at``, so a new leader or a restarted
beat carries on exactly where the ledger ends.
"""

from __future__ import annotations

import datetime as dt
import heapq
import time
from dataclasses import dataclass, field

import structlog
from django_celery_beat.models import PeriodicTask

from scheduling.engine import slots
from scheduling.engine.models import Dispatch, JobPolicy, ScheduleVersion

log = structlog.get_logger(__name__)

#: A slot at most this late is on time, whatever the catch-up window (tick jitter, a slow query).
ON_TIME = dt.timedelta(seconds=10)
#: A full reload even without a version change, in case a trigger was dropped by hand.
FULL_RELOAD_EVERY = 300.0


def anchor(model: PeriodicTask, policy: JobPolicy, last_slot: dt.datetime | None) -> dt.datetime:
    """Where a job's timeline continues: its last ledger slot, but never before it was resumed
    or started; a job with no history counts from its last edit."""
    if model.clocked_id and last_slot is None and model.clocked is not None:
        # A one-off at a clock time: due from that time, even if saved after it (it then runs
        # at once, as django-celery-beat runs it).
        return model.clocked.clocked_time - dt.timedelta(microseconds=1)
    candidates = [last_slot or model.date_changed]
    every = _interval_of(model) if model.start_time else None
    if every is not None and (last_slot is None or last_slot < model.start_time):
        # An interval job's first run is at its start_time (at once if that has passed), as
        # django-celery-beat runs it; then every interval from there.
        candidates = [max(model.start_time, model.date_changed or model.start_time) - every]
    elif model.start_time:
        candidates.append(model.start_time - dt.timedelta(microseconds=1))
    if policy.resumed_at:
        candidates.append(policy.resumed_at)
    return max(candidate for candidate in candidates if candidate is not None)


def _interval_of(model: PeriodicTask) -> dt.timedelta | None:
    interval = model.interval if model.interval_id else None
    if interval is None or interval.every <= 0:
        return None
    return dt.timedelta(**{interval.period: interval.every})


def schedule_in_words(model: PeriodicTask) -> str:
    """The job's schedule as people read it; a row that cannot be described says why."""
    try:
        if model.crontab_id:
            return f"{model.crontab.human_readable} ({model.crontab.timezone})"
        return str(model.interval or model.clocked or model.solar or "-")
    except Exception as exc:  # a row made outside the admin
        return f"invalid schedule: {exc}"


def policy_of(model: PeriodicTask) -> JobPolicy:
    return getattr(model, "policy", None) or JobPolicy(periodic_task=model)


_UNKNOWN = object()


def upcoming_runs(model: PeriodicTask, now: dt.datetime, count: int = 5, *,
                  last_slot=_UNKNOWN, schedule=None, policy=None) -> list[slots.Slot]:
    """The next ``count`` slots of ``model`` after ``now``, as beat will compute them (an
    interval counts from the job's last ledger slot: pass ``last_slot`` when it is known, else
    it is read)."""
    runs = _upcoming(model, now, count, last_slot, schedule, policy)
    # Beat sends nothing at or after ``expires`` (it disables the job then).
    return [run for run in runs if not model.expires or run.at < model.expires]


def _upcoming(model, now, count, last_slot, schedule, policy) -> list[slots.Slot]:
    if schedule is None:
        try:
            schedule = model.schedule
        except Exception:
            return []
    if isinstance(schedule, slots.schedules.schedule):
        if last_slot is _UNKNOWN:
            last_slot = Dispatch.objects.last_slots([model.pk]).get(model.pk)
        start = anchor(model, policy or policy_of(model), last_slot)
        every = schedule.run_every
        if every.total_seconds() <= 0:  # a row made outside the admin: no runs, not a crash
            return []
        if start < now:
            start += int((now - start) / every) * every
        return slots.upcoming(schedule, start, count)
    return slots.upcoming(schedule, now, count)


@dataclass(frozen=True)
class Missed:
    first: dt.datetime
    last: dt.datetime
    count: int


@dataclass(frozen=True)
class Decision:
    """What to do with a job's due slots at ``now``."""

    last: dt.datetime  # where the job's timeline stands afterwards
    send: dt.datetime | None = None  # the slot to send now
    missed: Missed | None = None  # slots to record as missed (catch-up window passed)
    skipped: dt.datetime | None = None  # the slot to record as skipped (overlap)
    expired: bool = False  # its ``expires`` has passed: beat disables it (as stock beat does)


def decide(schedule, last: dt.datetime, now: dt.datetime, *, window: dt.timedelta,
           overlap: str, running: bool, expires: dt.datetime | None = None) -> Decision | None:
    """Apply the catch-up and overlap policies to the slots of ``schedule`` after ``last`` that
    are due at ``now``; None when nothing is due."""
    if expires and now >= expires:
        return Decision(last=now, expired=True)  # nothing more is due
    due = slots.latest_due(schedule, last, now)
    if due is None:
        return None
    if now - due.latest > max(window, ON_TIME):
        return Decision(last=due.latest, missed=Missed(due.first, due.latest, due.count))
    missed = None
    if due.before_latest is not None:
        missed = Missed(due.first, due.before_latest, due.count - 1)
    if overlap == JobPolicy.Overlap.SKIP and running:
        return Decision(last=due.latest, missed=missed, skipped=due.latest)
    return Decision(last=due.latest, missed=missed, send=due.latest)


@dataclass
class Job:
    model: PeriodicTask
    schedule: object
    policy: JobPolicy
    last: dt.datetime | None = None  # the last slot handled (ledger), or the anchor before any

    @property
    def name(self) -> str:
        return self.model.name

    def decide(self, now: dt.datetime, *, running: bool) -> Decision | None:
        # A clocked one-off is never "too old to catch up": it has one slot, run it.
        window = (dt.timedelta.max if hasattr(self.schedule, "clocked_time")
                  else self.policy.window())
        return decide(self.schedule, self.last, now, window=window,
                      overlap=self.policy.overlap, running=running, expires=self.model.expires)


@dataclass(order=True)
class _Due:
    at: dt.datetime
    name: str = field(compare=True)


class Planner:
    """The enabled jobs as loaded from the database, and when each one is next due."""

    def __init__(self, *, monotonic=time.monotonic):
        self.jobs: dict[str, Job] = {}
        self.loaded_version: int | None = None
        self.stale = True  # the due heap must be rebuilt from the ledger before dispatching
        self._due: list[_Due] = []
        self._monotonic = monotonic
        self._loaded_at: float | None = None

    def refresh(self) -> bool:
        """Reload the jobs when the schedule version moved (or every few minutes anyway)."""
        version = ScheduleVersion.current()
        fresh = (self._loaded_at is not None
                 and self._monotonic() - self._loaded_at <= FULL_RELOAD_EVERY)
        if version == self.loaded_version and fresh:
            return False
        self.load()
        if self.loaded_version is not None and version != self.loaded_version:
            log.info("beat.schedule_changed", version=version, jobs=len(self.jobs))
        self.loaded_version, self._loaded_at = version, self._monotonic()
        return True

    def load(self) -> None:
        models = PeriodicTask.objects.enabled().select_related(
            "crontab", "interval", "solar", "clocked", "policy")
        jobs = {}
        for model in models:
            try:
                schedule = model.schedule
            except Exception as exc:  # a row whose schedule was deleted or cannot be built
                log.error("beat.bad_schedule", job=model.name, error=str(exc))
                continue
            jobs[model.name] = Job(model, schedule, policy_of(model))
        self.jobs, self.stale = jobs, True

    def plan(self) -> None:
        """Set each job's last handled slot from the ledger and rebuild the due heap."""
        last_slots = Dispatch.objects.last_slots([job.model.pk for job in self.jobs.values()])
        self._due = []
        for job in self.jobs.values():
            job.last = anchor(job.model, job.policy, last_slots.get(job.model.pk))
            self.push(job)
        heapq.heapify(self._due)
        self.stale = False

    def push(self, job: Job) -> None:
        """Queue ``job`` for its next slot after ``job.last``."""
        try:
            at = slots.next_slot(job.schedule, job.last)
        except Exception as exc:
            log.error("beat.next_slot_failed", job=job.name, error=str(exc))
            return
        if at is not None:
            heapq.heappush(self._due, _Due(at, job.name))

    def pop_due(self, now: dt.datetime) -> list[Job]:
        """Every job whose next slot has come (each must be ``push``-ed back when handled)."""
        due = []
        while self._due and self._due[0].at <= now:
            job = self.jobs.get(heapq.heappop(self._due).name)
            if job is not None:
                due.append(job)
        return due

    def seconds_to_next(self, now: dt.datetime, cap: float) -> float:
        if not self._due:
            return cap
        return max(0.0, min(cap, (self._due[0].at - now).total_seconds()))
