"""The status of every periodic job at a given ``now``, derived from its live django-celery-beat
row and the ledger; and the state of the beats.

Statuses, in order of precedence:
``paused`` (disabled) · ``late`` (a due slot plus grace passed and beat handled nothing: the
scheduler is the problem) · ``queued`` (dispatched but not started within grace: the workers are
the problem) · ``slow`` (running past its max runtime) · ``failing`` (the last N runs failed, or
the outcome check finds work left over for longer than the grace) · ``running`` · ``never_run``
· ``ok``. ``BAD`` are the ones the liveness check and alerts act on.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from django.conf import settings
from django_celery_beat.models import PeriodicTask

from monitoring.models import JobMonitor
from scheduling.beat import (
    BeatHeartbeat,
    Dispatch,
    ScheduleVersion,
    anchor,
    current_lease,
    latest_due,
    policy_of,
    upcoming_runs,
)
from scheduling.billing.outcomes import OUTCOMES

BAD = frozenset({"late", "queued", "slow", "failing"})
ALERTING = frozenset({"late", "queued", "failing"})  # what the liveness check exits 1 for
RUNS = (Dispatch.Kind.SCHEDULED, Dispatch.Kind.MANUAL)
COUNTING = (Dispatch.Kind.SCHEDULED, Dispatch.Kind.MISSED, Dispatch.Kind.SKIPPED)


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
    recent: list = field(default_factory=list)  # newest first: (state, slot, kind)
    pk: int | None = None

    def as_dict(self) -> dict:
        def iso(value):
            return value.isoformat() if value else None

        return {
            "name": self.name, "task": self.task, "status": self.status, "reason": self.reason,
            "schedule": self.schedule, "next_run": iso(self.next_run),
            "last_success": iso(self.last_success), "last_failure": iso(self.last_failure),
            "last_start": iso(self.last_start), "last_duration_ms": self.last_duration_ms,
            "consecutive_failures": self.consecutive_failures,
        }


def schedule_in_words(model: PeriodicTask) -> str:
    if model.crontab_id:
        return f"{model.crontab.human_readable} ({model.crontab.timezone})"
    return str(model.interval or model.clocked or model.solar or "-")


def _ago(now, then) -> str:
    seconds = int((now - then).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def job_status(model: PeriodicTask, now: dt.datetime, *, outcomes: bool = True) -> JobStatus:
    monitor = getattr(model, "monitor", None) or JobMonitor(periodic_task=model)
    policy = policy_of(model)
    grace = dt.timedelta(seconds=monitor.grace_seconds)
    ledger = Dispatch.objects.filter(periodic_task=model)
    recent = list(ledger.order_by("-slot")[:20])
    runs = [row for row in recent if row.kind in RUNS]
    succeeded = ledger.filter(state=Dispatch.State.SUCCEEDED).order_by("-slot").first()
    failed = ledger.filter(state=Dispatch.State.FAILED).order_by("-slot").first()
    finished = [r for r in runs if r.state in (Dispatch.State.SUCCEEDED, Dispatch.State.FAILED)]
    streak = 0
    for row in finished:
        if row.state != Dispatch.State.FAILED:
            break
        streak += 1
    latest = runs[0] if runs else None
    last_duration = None
    done = next((r for r in finished if r.started_at and r.finished_at), None)
    if done:
        last_duration = round((done.finished_at - done.started_at).total_seconds() * 1000, 1)
    result = JobStatus(
        name=model.name, task=model.task, status="ok", schedule=schedule_in_words(model),
        last_success=succeeded.finished_at if succeeded else None,
        last_failure=failed.finished_at if failed else None,
        last_start=latest.started_at if latest else None,
        last_duration_ms=last_duration, consecutive_failures=streak,
        recent=[(r.state, r.slot, r.kind) for r in recent], pk=model.pk,
    )
    if not model.enabled:
        result.status, result.reason = "paused", "disabled in the schedule"
        return result
    upcoming = upcoming_runs(model, now, 1)
    result.next_run = upcoming[0].at if upcoming else None

    # late: a slot due more than grace ago that beat has not handled (sent, missed or skipped).
    last_handled = next((r.slot for r in recent if r.kind in COUNTING), None)
    try:
        due = latest_due(model.schedule, anchor(model, policy, last_handled), now - grace)
    except Exception as exc:
        result.status, result.reason = "late", f"its schedule cannot be computed: {exc}"
        return result
    if due is not None:
        result.status = "late"
        result.reason = (f"the run due at {due.latest:%Y-%m-%d %H:%M:%S} UTC "
                         f"({_ago(now, due.latest)} ago) was not dispatched")
        return result
    if latest is not None and latest.state in (Dispatch.State.RESERVED, Dispatch.State.SENT):
        started = Dispatch.objects.filter(pk=latest.pk).running(since=latest.dispatched_at)
        started_at = started[latest.task_id][1] if latest.task_id in started else None
        if started_at is None:
            if now - latest.dispatched_at > grace:
                result.status = "queued"
                result.reason = (f"dispatched {_ago(now, latest.dispatched_at)} ago and not "
                                 "started: are workers running and consuming its queue?")
                return result
        else:
            result.last_start = started_at
            if (now - started_at).total_seconds() > monitor.max_runtime_seconds:
                result.status = "slow"
                result.reason = (f"running for {_ago(now, started_at)}, more than its "
                                 f"max runtime of {monitor.max_runtime_seconds} s")
                return result
            result.status = "running"
    if streak >= monitor.failures_threshold:
        result.status = "failing"
        result.reason = f"the last {streak} run(s) failed"
        return result
    outcome = OUTCOMES.get(model.task)
    if outcomes and outcome is not None and succeeded is not None:
        checked_at = _run_now(succeeded)
        as_of = min(now - grace, checked_at)
        try:
            kwargs = json.loads(model.kwargs or "{}")
        except ValueError:
            kwargs = {}
        left = outcome.overdue(as_of, kwargs)
        if left:
            result.status = "failing"
            result.reason = (f"{left} {outcome.what} as of {as_of:%Y-%m-%d %H:%M:%S} UTC are "
                             "still there after a successful run")
            return result
    if latest is None:
        result.status, result.reason = "never_run", "no run yet"
    return result


def _run_now(row: Dispatch) -> dt.datetime:
    """The ``now`` the job ran with (it returns it), else when it started."""
    value = (row.result or {}).get("now")
    if value:
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    return row.started_at or row.dispatched_at


def job_statuses(now: dt.datetime, *, outcomes: bool = True) -> list[JobStatus]:
    models = PeriodicTask.objects.select_related(
        "crontab", "interval", "solar", "clocked", "policy", "monitor"
    ).order_by("name")
    return [job_status(model, now, outcomes=outcomes) for model in models]


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
