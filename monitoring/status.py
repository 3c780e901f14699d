"""The status of every periodic job at a given ``now``, and the state of the beats: the one
derivation behind ``check_scheduler_liveness``, ``/health/scheduler``, ``/metrics``, the
dashboard, the admin banner and the alerts.

A job is green only when the work is really done: the newest slot that should have *succeeded*
by now (due + grace + the job's max runtime) must have a successful run at or after it. When it
has not, the status names the stage that is stuck. The stages are ``Status``; their precedence is
``PRECEDENCE``, an ordered list of small predicates (the first that answers wins), so the order
reads as the precedence and a new stage is one entry.

Set-based: ``job_statuses`` reads every job's facts in a fixed number of queries (the periodic
tasks with their ledger summary as subqueries, the rows those point at, the unfinished runs with
their django-celery-results state, the worker registry), whatever the number of jobs. The
outcome checks add one query per job whose task has one (the billing jobs).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from celery import current_app
from django.conf import settings
from django.db import models
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from monitoring.models import JobMonitor
from scheduling.beat import (
    BeatHeartbeat,
    CannotSend,
    Dispatch,
    JobPolicy,
    ScheduleVersion,
    WorkerProcess,
    anchor,
    current_lease,
    latest_due,
    message_for,
    next_slot,
    route_of,
    schedule_in_words,
    upcoming_runs,
)
from scheduling.billing.outcomes import OUTCOMES


class Status(models.TextChoices):
    OK = "ok"
    RUNNING = "running"
    NEVER_RUN = "never_run", "never run"
    PAUSED = "paused"
    EXPIRED = "expired"  # its ``expires`` has passed: nothing more is due
    INVALID = "invalid"  # its schedule cannot be computed
    LATE = "late"  # due and not dispatched: the scheduler
    QUEUED = "queued"  # dispatched (or due) and not started: the workers or the routing
    LOST = "lost"  # a run that can never finish any more
    SLOW = "slow"  # running past its max runtime
    FAILING = "failing"  # runs failed, or the outcome check finds work left over
    MISSED = "missed"  # slots missed or skipped, and no success since


BAD = frozenset({Status.INVALID, Status.LATE, Status.QUEUED, Status.LOST, Status.SLOW,
                 Status.FAILING, Status.MISSED})
ALERTING = BAD - {Status.SLOW}  # what the liveness check exits 1 for (slow is a warning)
RUNS = (Dispatch.Kind.SCHEDULED, Dispatch.Kind.MANUAL)
COUNTING = (Dispatch.Kind.SCHEDULED, Dispatch.Kind.MISSED, Dispatch.Kind.SKIPPED)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: What a job without its own row uses (read only; unsaved, shared by every such job).
DEFAULT_MONITOR, DEFAULT_POLICY = JobMonitor(), JobPolicy()
ROW_FIELDS = ("id", "slot", "kind", "state", "task_id", "dispatched_at", "started_at",
              "finished_at", "result", "error")


@dataclass
class JobStatus:
    name: str
    task: str
    status: str
    reason: str = ""
    schedule: str = ""
    next_run: dt.datetime | None = None
    last_success: dt.datetime | None = None
    last_failure: dt.datetime | None = None
    last_start: dt.datetime | None = None
    last_duration_ms: float | None = None
    consecutive_failures: int = 0
    route: str = ""
    cause: str = ""  # "route" / "task" when no live worker takes its messages
    recent: list = field(default_factory=list)  # newest first: (state, slot, kind); dashboard
    pk: int | None = None
    progress: dict | None = None

    def as_dict(self) -> dict:
        def iso(value):
            return value.isoformat() if value else None

        return {
            "name": self.name, "task": self.task, "status": self.status, "reason": self.reason,
            "schedule": self.schedule, "next_run": iso(self.next_run),
            "last_success": iso(self.last_success), "last_failure": iso(self.last_failure),
            "last_start": iso(self.last_start), "last_duration_ms": self.last_duration_ms,
            "consecutive_failures": self.consecutive_failures, "route": self.route,
            "progress": self.progress,
        }


def _words(model: PeriodicTask, cache: dict) -> str:
    """``schedule_in_words``, once per distinct schedule row (jobs share them)."""
    key = (model.interval_id, model.crontab_id, model.solar_id, model.clocked_id)
    if key not in cache:
        cache[key] = schedule_in_words(model)
    return cache[key]


def _ago(now, then) -> str:
    seconds = int((now - then).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _at(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


@dataclass
class Facts:
    """Everything the predicates look at for one job, read set-based by ``job_statuses``."""

    model: PeriodicTask
    now: dt.datetime
    monitor: JobMonitor
    last_handled: dt.datetime | None  # newest scheduled / missed / skipped slot
    success: dict | None  # newest succeeded row
    failure: dict | None  # newest failed row
    newest_run: dict | None  # newest scheduled or manual run, any state
    lost: dict | None  # newest lost run
    expired: dict | None  # newest run whose message expired unrun
    streak: int  # failed runs since the newest success
    unfinished: list  # runs still reserved / sent, oldest first, with ``started`` / ``worker``
    workers: list  # live WorkerProcess rows
    outcomes: bool = True
    schedule: object = None
    schedule_error: str = ""
    send_error: str = ""  # why its message cannot be built (its stored arguments / headers)
    route: object = None

    @property
    def running(self) -> dict | None:
        """The oldest unfinished run that has started."""
        return next((row for row in self.unfinished if row["started"]), None)

    @property
    def waiting(self) -> dict | None:
        """The oldest run not started yet and newer than the newest success (an older one does
        not count: a later run did the work; its message was dropped or is still queued, and the
        ledger marks it lost past the hard limit)."""
        return next((row for row in self.unfinished
                     if not row["started"] and self.since_success(row)), None)

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.monitor.grace_seconds)

    @cached_property
    def policy(self):
        return getattr(self.model, "policy", None) or DEFAULT_POLICY

    def since_success(self, row: dict | None) -> bool:
        """Is ``row`` newer than the newest success (so not resolved by it)?"""
        return row is not None and (self.success is None or row["slot"] > self.success["slot"])


# --- the predicates, in order of precedence: each returns the reason, or None ----------------
def _paused(f: Facts):
    return "disabled in the schedule" if not f.model.enabled else None


def _expired(f: Facts):
    if f.model.expires and f.now >= f.model.expires:
        return f"expired at {_at(f.model.expires)}: nothing more is due"
    return None


def _invalid(f: Facts):
    return f"invalid schedule: {f.schedule_error}" if f.schedule_error else None


def _cannot_send(f: Facts):
    """Its message cannot be built: known from the row itself, before any slot."""
    return f"cannot send: {f.send_error}" if f.send_error else None


def _late(f: Facts):
    due = latest_due(f.schedule, anchor(f.model, f.policy, f.last_handled), f.now - f.grace)
    if due is None:
        return None
    return f"the run due at {_at(due.latest)} ({_ago(f.now, due.latest)} ago) was not dispatched"


def _unconsumed(f: Facts):
    """Nothing can take this job's messages: no live worker on its route, or none that has its
    task registered. Red at once, before a run is even late."""
    takers = [w for w in f.workers if f.route.consumed_by(w.queues)]
    if not takers:
        if f.route.queue is None:
            return ("message is not routed to any queue: no live worker consumes a queue bound "
                    f"to {f.route}")
        return f"no live worker consumes {f.route}: start a worker with -Q {f.route.queue}"
    if not any(f.model.task in w.tasks for w in takers):
        return f"task '{f.model.task}' is not registered on any live worker consuming {f.route}"
    return None


def _lost(f: Facts):
    row = f.lost
    if f.since_success(row):
        return f"the run due at {_at(row['slot'])} is lost: {row['error'] or 'no reason recorded'}"
    return None


def _message_expired(f: Facts):
    row = f.expired
    if f.since_success(row):
        return f"the run due at {_at(row['slot'])}: message expired before a worker took it"
    return None


def _not_started(f: Facts):
    row = f.waiting
    if row and f.now - row["dispatched_at"] > f.grace:
        return f"dispatched {_ago(f.now, row['dispatched_at'])} ago and not started"
    return None


def _slow(f: Facts):
    row = f.running
    if row and (
            (f.now - row["started"]).total_seconds() > f.monitor.max_runtime_seconds):
        return (f"running for {_ago(f.now, row['started'])}, more than its max runtime of "
                f"{f.monitor.max_runtime_seconds} s")
    return None


def _failing(f: Facts):
    if f.streak >= f.monitor.failures_threshold:
        error = (f.failure or {}).get("error")
        return f"the last {f.streak} run(s) failed" + (f": {error}" if error else "")
    return None


def _outcome(f: Facts):
    outcome = OUTCOMES.get(f.model.task)
    if not f.outcomes or outcome is None or f.success is None:
        return None
    as_of = min(f.now - f.grace, _run_now(f.success))
    try:
        kwargs = json.loads(f.model.kwargs or "{}")
        left = outcome.overdue(as_of, kwargs if isinstance(kwargs, dict) else {})
    except (ValueError, TypeError):
        return None  # arguments the job itself refuses: its runs fail and say so
    if left:
        return (f"{left} {outcome.what} as of {_at(as_of)} are still there after a successful "
                "run")
    return None


def _overdue_slot(f: Facts) -> dt.datetime | None:
    """The success-centric check: the first slot after the newest success (or the job's start)
    if it should have succeeded by now (due + grace + max runtime) and nothing succeeded since."""
    done_by = f.now - f.grace - dt.timedelta(seconds=f.monitor.max_runtime_seconds)
    slot = next_slot(f.schedule, anchor(f.model, f.policy, f.success and f.success["slot"]))
    return slot if slot is not None and slot <= done_by else None


def _failed_since(f: Facts):
    slot = _overdue_slot(f) if f.since_success(f.failure) else None
    if slot is None:
        return None
    return f"no run has succeeded since the one due at {_at(slot)}: the last one failed"


def _not_done(f: Facts):
    slot = _overdue_slot(f)
    if slot is None:
        return None
    return f"no run has succeeded since the one due at {_at(slot)} (slots missed or skipped)"


def _running(f: Facts):
    return "running" if f.running else None


def _never_run(f: Facts):
    return "no run yet" if f.newest_run is None else None


#: The precedence: the first predicate that gives a reason sets the status.
PRECEDENCE: list[tuple[Status, Callable[[Facts], str | None]]] = [
    (Status.EXPIRED, _expired),  # before paused: beat disables a job once it expires
    (Status.PAUSED, _paused),
    (Status.INVALID, _invalid),
    (Status.INVALID, _cannot_send),
    (Status.LATE, _late),
    (Status.QUEUED, _unconsumed),
    (Status.LOST, _lost),
    (Status.QUEUED, _message_expired),
    (Status.QUEUED, _not_started),
    (Status.SLOW, _slow),
    (Status.FAILING, _failing),
    (Status.FAILING, _outcome),
    (Status.FAILING, _failed_since),
    (Status.MISSED, _not_done),
    (Status.RUNNING, _running),
    (Status.NEVER_RUN, _never_run),
]
#: Predicates that need a computable schedule and a route (skipped for paused / invalid jobs).
NEEDS_SCHEDULE = {_late, _unconsumed, _failed_since, _not_done}


def derive(f: Facts) -> tuple[Status, str, Callable | None]:
    """The status, its reason, and the predicate that gave it."""
    for status, predicate in PRECEDENCE:
        if f.schedule is None and predicate in NEEDS_SCHEDULE:
            continue
        reason = predicate(f)
        if reason:
            return status, reason, predicate
    return Status.OK, "", None


def _run_now(row: dict) -> dt.datetime:
    """The ``now`` the job ran with (it returns it), else when it started."""
    value = (row.get("result") or {}).get("now")
    if value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    return row["started_at"] or row["dispatched_at"]


# --- reading the facts set-based ---------------------------------------------------------------
def _newest(queryset, value="pk"):
    """The newest (by slot) ``value`` of ``queryset`` for the outer periodic task."""
    return Subquery(queryset.filter(periodic_task_id=OuterRef("pk")).order_by("-slot")
                    .values(value)[:1])


def annotated_tasks(queryset=None):
    """Periodic tasks with their ledger summary (one query, one index probe per subquery)."""
    ledger = Dispatch.objects
    succeeded = ledger.filter(state=Dispatch.State.SUCCEEDED)
    since_success = Coalesce(Subquery(
        succeeded.filter(periodic_task_id=OuterRef(OuterRef("pk"))).order_by("-slot")
        .values("slot")[:1]), Value(EPOCH))
    streak = (ledger.filter(periodic_task_id=OuterRef("pk"), state=Dispatch.State.FAILED,
                            slot__gt=since_success)
              .order_by().values("periodic_task_id").annotate(n=Count("pk")).values("n"))
    queryset = queryset if queryset is not None else PeriodicTask.objects.all()
    return queryset.select_related(
        "crontab", "interval", "solar", "clocked", "policy", "monitor"
    ).annotate(
        last_handled=_newest(ledger.filter(kind__in=COUNTING), "slot"),
        success_id=_newest(succeeded),
        failure_id=_newest(ledger.filter(state=Dispatch.State.FAILED)),
        newest_run_id=_newest(ledger.filter(kind__in=RUNS)),
        lost_id=_newest(ledger.filter(state=Dispatch.State.LOST)),
        expired_id=_newest(ledger.filter(state=Dispatch.State.EXPIRED)),
        finished_id=_newest(ledger.filter(kind__in=RUNS, state__in=(
            Dispatch.State.SUCCEEDED, Dispatch.State.FAILED), started_at__isnull=False)),
        streak=Coalesce(Subquery(streak), 0),
    )


def _unfinished_runs(task_ids) -> dict[int, list[dict]]:
    """The unfinished runs of each job, oldest first, with when each started and on which worker
    (from django-celery-results' STARTED row), in one query."""
    results = TaskResult.objects.filter(task_id=OuterRef("task_id"), status="STARTED")
    rows = (Dispatch.objects.unfinished().filter(periodic_task_id__in=task_ids)
            .annotate(started=Subquery(results.values("date_started")[:1]),
                      worker=Subquery(results.values("worker")[:1]))
            .order_by("periodic_task_id", "slot")
            .values("periodic_task_id", *ROW_FIELDS, "started", "worker", "rows_done",
                    "batches_done", "progress_at"))
    found: dict[int, list[dict]] = {}
    for row in rows:
        found.setdefault(row["periodic_task_id"], []).append(row)
    return found


def _routes(models_) -> dict:
    app, by_task, routes = current_app, {}, {}
    for model in models_:
        if model.queue or model.exchange or model.routing_key:
            routes[model.pk] = route_of(app, model.task, model.queue, model.exchange,
                                        model.routing_key)
        else:
            if model.task not in by_task:
                by_task[model.task] = route_of(app, model.task)
            routes[model.pk] = by_task[model.task]
    return routes


def live_workers(now: dt.datetime) -> list[WorkerProcess]:
    return list(WorkerProcess.objects.live(now))


def job_statuses(now: dt.datetime, *, outcomes: bool = True, pks=None,
                 queryset=None) -> list[JobStatus]:
    """Every job's status (or those with ``pks``), by name; a fixed number of queries."""
    tasks = queryset if queryset is not None else PeriodicTask.objects.all()
    if pks is not None:
        tasks = tasks.filter(pk__in=list(pks))
    models_ = list(annotated_tasks(tasks).order_by("name"))
    ids = {getattr(m, name) for m in models_
           for name in ("success_id", "failure_id", "newest_run_id", "finished_id", "lost_id",
                         "expired_id")}
    ids.discard(None)
    rows = {row["id"]: row for row in Dispatch.objects.filter(pk__in=ids).values(*ROW_FIELDS)}
    enabled = [m.pk for m in models_ if m.enabled]
    unfinished = _unfinished_runs(enabled) if enabled else {}
    workers = live_workers(now)
    routes, words = _routes(models_), {}
    return [_status(model, now, rows, unfinished.get(model.pk, []), workers, routes[model.pk],
                    outcomes, words) for model in models_]


def job_status(model: PeriodicTask, now: dt.datetime, *, outcomes: bool = True) -> JobStatus:
    return job_statuses(now, outcomes=outcomes, pks=[model.pk])[0]


def checked_schedule(model: PeriodicTask, now: dt.datetime):
    """The job's Celery schedule, or an exception saying why it cannot be computed (a row made
    outside the admin: an interval of 0, a crontab Celery cannot build)."""
    schedule = model.schedule
    if schedule is None:
        raise ValueError("it has no schedule")
    every = getattr(schedule, "run_every", None)
    if isinstance(every, dt.timedelta) and every.total_seconds() <= 0:
        raise ValueError(f"the interval must be positive, not {every.total_seconds():g} s")
    next_slot(schedule, now)
    return schedule


def _status(model, now, rows, unfinished, workers, route, outcomes, words=None) -> JobStatus:
    monitor = getattr(model, "monitor", None) or DEFAULT_MONITOR
    success, failure = rows.get(model.success_id), rows.get(model.failure_id)
    finished, newest_run = rows.get(model.finished_id), rows.get(model.newest_run_id)
    facts = Facts(model=model, now=now, monitor=monitor, last_handled=model.last_handled,
                  success=success, failure=failure, newest_run=newest_run, streak=model.streak,
                  lost=rows.get(model.lost_id), expired=rows.get(model.expired_id),
                  unfinished=unfinished, workers=workers, outcomes=outcomes, route=route)
    try:
        facts.schedule = checked_schedule(model, now)
    except Exception as exc:
        facts.schedule, facts.schedule_error = None, f"{type(exc).__name__}: {exc}"
    try:
        message_for(model, now, Dispatch.Kind.SCHEDULED)
    except CannotSend as exc:
        facts.send_error = str(exc)
    result = JobStatus(
        name=model.name, task=model.task, status=Status.OK, pk=model.pk, route=str(route),
        schedule=_words(model, {} if words is None else words),
        last_success=success["finished_at"] if success else None,
        last_failure=failure["finished_at"] if failure else None,
        last_start=(facts.running or {}).get("started") or (newest_run or {}).get("started_at"),
        consecutive_failures=model.streak,
    )
    if finished and finished["started_at"] and finished["finished_at"]:
        result.last_duration_ms = round(
            (finished["finished_at"] - finished["started_at"]).total_seconds() * 1000, 1)
    if facts.running:
        result.progress = progress_of(facts.running)
    status, reason, predicate = derive(facts)
    result.status, result.reason = status.value, reason
    result.cause = "route" if predicate is _unconsumed else ""
    if model.enabled and facts.schedule is not None and status != Status.EXPIRED:
        upcoming = upcoming_runs(model, now, 1, last_slot=model.last_handled,
                                 schedule=facts.schedule, policy=facts.policy)
        result.next_run = upcoming[0].at if upcoming else None
    return result


def progress_of(run: dict) -> dict:
    """A running run's progress: since when, where, and what its batches have committed so far
    (``rows`` / ``batches`` over every attempt, ``rows_per_s`` since its first batch)."""
    rows, batches = run.get("rows_done") or 0, run.get("batches_done") or 0
    first, last = run.get("started_at"), run.get("progress_at")
    span = (last - first).total_seconds() if first and last else 0
    return {
        "started": run["started"].isoformat(), "worker": run["worker"], "rows": rows,
        "batches": batches, "rows_per_s": round(rows / span, 1) if span > 0 else None,
        "last_batch_at": last.isoformat() if last else None,
    }


def progress_text(progress: dict | None) -> str:
    """``12,300 rows in 246 batches, 2,460 rows/s`` (the dashboard's line under "running")."""
    if not progress or not progress["batches"]:
        return ""
    rate = f", {progress['rows_per_s']:,.0f} rows/s" if progress["rows_per_s"] else ""
    return f"{progress['rows']:,} rows in {progress['batches']:,} batches{rate}"


def recent_runs(pks, per_job: int = 20) -> dict[int, list]:
    """The newest ``per_job`` ledger rows of each job in ``pks`` (one query): newest first,
    ``(state, slot, kind)``."""
    numbered = Dispatch.objects.filter(periodic_task_id__in=list(pks)).annotate(
        n=models.Window(models.functions.RowNumber(), partition_by=models.F("periodic_task_id"),
                        order_by=models.F("slot").desc()))
    found: dict[int, list] = {}
    for task_id, state, slot, kind in (numbered.filter(n__lte=per_job)
                                       .order_by("periodic_task_id", "-slot")
                                       .values_list("periodic_task_id", "state", "slot", "kind")):
        found.setdefault(task_id, []).append((state, slot, kind))
    return found


def workers_per_queue(workers) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in workers:
        for name in worker.queue_names:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class BeatState:
    ok: bool
    problems: list[str]
    leader: str | None = None
    heartbeat_age: float | None = None
    loaded_version: int | None = None
    current_version: int | None = None
    standbys: int = 0


def unscheduled_jobs(beat: BeatState) -> int:
    """Enabled periodic jobs that no process schedules: all of them while no beat is alive."""
    return 0 if beat.ok else PeriodicTask.objects.filter(enabled=True).count()


def beat_state(now: dt.datetime, *, max_age: float | None = None) -> BeatState:
    """Is a beat alive, leading, and on the current schedule?"""
    max_age = max_age if max_age is not None else 3 * settings.SCHEDULING_BEAT_TICK
    fresh_after = now - dt.timedelta(seconds=max_age)
    running = BeatHeartbeat.objects.filter(stopped_at__isnull=True)
    beats = list(running.order_by("-last_tick_at")[:20])
    lease = current_lease()
    version = ScheduleVersion.objects.filter(pk=1).first()
    state = BeatState(ok=True, problems=[], current_version=version.version if version else 0)
    leaders = [b for b in beats if b.is_leader]
    newest = beats[0] if beats else None
    if newest:
        state.heartbeat_age = round((now - newest.last_tick_at).total_seconds(), 1)
    state.standbys = sum(1 for b in beats if not b.is_leader and b.last_tick_at >= fresh_after)
    leader = leaders[0] if leaders else None
    if leader is None or leader.last_tick_at < fresh_after:
        if leader is not None:
            seconds = (now - leader.last_tick_at).total_seconds()
            last = f"the last leader heartbeat was {seconds:.0f} s ago"
        else:
            gone = BeatHeartbeat.objects.exclude(stopped_at=None).order_by("-stopped_at").first()
            last = (f"the last beat stopped {(now - gone.stopped_at).total_seconds():.0f} s ago"
                    if gone else "no beat has ever run")
        state.problems.append(
            f"no beat is leading: {last} (max age {max_age:.0f} s); beat is stopped or hung"
        )
    elif lease is None or lease.holder != leader.instance or lease.expires_at < now:
        state.problems.append("the leading beat does not hold a valid lease")
    if leader is not None:
        state.leader = leader.instance
        state.loaded_version = leader.schedule_version
        settled = version is None or version.changed_at is None or (
            now - version.changed_at).total_seconds() > 2 * settings.SCHEDULING_BEAT_TICK + 1
        if (leader.last_tick_at >= fresh_after and version is not None
                and leader.schedule_version != version.version and settled):
            state.problems.append(
                f"the leading beat has loaded schedule version {leader.schedule_version}, "
                f"the database is at {version.version}"
            )
    state.ok = not state.problems
    return state
