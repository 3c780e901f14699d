"""The operations people perform on a job: pause, resume, run now, and the audit trail of every
change. Callable from the admin (whose actions are thin wrappers), a command or a shell::

    from scheduling.beat import services
    services.pause(PeriodicTask.objects.filter(name="expire-coupons"), by=user, reason="incident")
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from scheduling.engine.dispatch import CannotSend, dispatch, field_errors, message_for
from scheduling.engine.models import Dispatch, JobPolicy, ScheduleChange

#: The periodic task fields whose change is recorded.
AUDITED_FIELDS = (
    "name", "task", "enabled", "description", "interval", "crontab", "solar", "clocked",
    "start_time", "one_off", "args", "kwargs", "expires", "expire_seconds", "queue", "exchange",
    "routing_key", "priority", "headers",
)


def audit_value(obj, field: str):
    """A field's value as it is stored in the audit trail (JSON)."""
    value = getattr(obj, field, None)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def diff(before, after, fields=AUDITED_FIELDS) -> dict:
    """``{field: [old, new]}`` for the fields that differ; ``before`` None for an addition."""
    if before is None:
        return {f: [None, audit_value(after, f)] for f in fields if audit_value(after, f)}
    return {f: [audit_value(before, f), audit_value(after, f)] for f in fields
            if audit_value(before, f) != audit_value(after, f)}


def record_change(model, *, action, user=None, changes=None, reason="", task_name=None):
    return ScheduleChange.objects.create(
        periodic_task=model if model is not None and model.pk else None,
        task_name=task_name or model.name,
        action=action,
        changed_by=user if user is not None and user.is_authenticated else None,
        changes=changes or {},
        reason=reason,
    )


@dataclass(frozen=True)
class Outcome:
    done: list  # the jobs changed
    unchanged: int  # selected but already in the wanted state


def row_errors(model: PeriodicTask) -> dict[str, str]:
    """What beat could not use in ``model`` as stored, by field: the message fields
    (``field_errors``), an interval that is not positive, a schedule Celery cannot build."""
    errors = field_errors(model)
    try:
        schedule = model.schedule  # builds the Celery schedule (a bad crontab raises)
    except Exception as exc:
        errors["schedule"] = f"{type(exc).__name__}: {exc}"
        return errors
    every = getattr(schedule, "run_every", None) if model.interval_id else None
    if every is not None and every.total_seconds() <= 0:
        errors["interval"] = f"must be positive, not {model.interval.every}"
    return errors


def validate_job(model: PeriodicTask) -> None:
    """``ValidationError`` by field when beat could not send ``model`` as stored (``row_errors``).
    The admin form runs the same checks; call it from scripts and data migrations before
    saving."""
    errors = row_errors(model)
    if errors:
        raise ValidationError(errors)


@dataclass
class RunNow:
    sent: list  # the jobs sent
    refused: list  # (job, reason): its message cannot be built


def pause(jobs, *, by, reason: str, now: dt.datetime | None = None) -> Outcome:
    """Stop beat sending ``jobs`` until resumed; who and why are stamped and audited."""
    return _set_enabled(jobs, enabled=False, by=by, reason=reason, now=now)


def resume(jobs, *, by, reason: str, now: dt.datetime | None = None) -> Outcome:
    """Send ``jobs`` again from their next slot (slots passed while paused are not caught up)."""
    return _set_enabled(jobs, enabled=True, by=by, reason=reason, now=now)


def _set_enabled(jobs, *, enabled: bool, by, reason: str, now) -> Outcome:
    if not reason or not reason.strip():
        raise ValueError("a reason is required")
    now, done, total = now or timezone.now(), [], 0
    for model in jobs:
        total += 1
        with transaction.atomic():
            # Compare-and-set: two people pausing at once record one pause.
            if not PeriodicTask.objects.filter(pk=model.pk, enabled=not enabled).update(
                    enabled=enabled):
                continue
            stamp = ({"resumed_at": now, "resumed_by": by, "resume_reason": reason} if enabled
                     else {"paused_at": now, "paused_by": by, "pause_reason": reason})
            JobPolicy.objects.update_or_create(periodic_task=model, defaults=stamp)
            record_change(
                model, user=by, reason=reason, changes={"enabled": [not enabled, enabled]},
                action=ScheduleChange.Action.RESUMED if enabled else ScheduleChange.Action.PAUSED)
        done.append(model)
    return Outcome(done, total - len(done))


def run_now(jobs, *, by, who: str | None = None, now: dt.datetime | None = None) -> RunNow:
    """Send each job once now, through beat's own path (ledger row of kind ``manual``, headers,
    queue), when the surrounding transaction commits; audited. A job whose message cannot be
    built (its stored arguments, or ones its task refuses) is refused with the reason."""
    now = now or timezone.now()
    label = who or (f"admin:{by.get_username()}" if by is not None else "shell")
    outcome = RunNow(sent=[], refused=[])
    for model in jobs.select_related("crontab", "interval", "solar", "clocked"):
        try:
            message_for(model, now, Dispatch.Kind.MANUAL)
        except CannotSend as exc:
            outcome.refused.append((model, str(exc)))
            continue
        transaction.on_commit(
            lambda m=model: dispatch(m, slot=now, now=now, by=label, kind=Dispatch.Kind.MANUAL))
        record_change(model, action=ScheduleChange.Action.RUN_NOW, user=by)
        outcome.sent.append(model)
    return outcome
