"""Sending: the one path by which a periodic task goes out. Beat uses it for each due slot, "run
now" for a manual run: ledger row first (``ledger.reserve``), then the message, then the row is
confirmed.

Headers added to every message (read back on the worker from ``task.request``):
``periodic_task_name`` (django-celery-beat's own header, which django-celery-results stores on
the result), ``scheduled_slot`` (ISO 8601, UTC) and ``dispatch_kind``.
"""

from __future__ import annotations

import datetime as dt
import json

import structlog
from celery import current_app
from django.conf import settings
from django.db.models import F
from django_celery_beat.models import PeriodicTask

from scheduling.engine import ledger
from scheduling.engine.models import Dispatch, ScheduleChange
from scheduling.engine.planner import Planner

log = structlog.get_logger(__name__)

#: Reserved-but-unconfirmed ledger rows older than this belong to a beat that died mid-send.
RESEND_AFTER = dt.timedelta(seconds=15)


class CannotSend(ValueError):
    """This job's message cannot be built (its arguments, headers or options as stored, or
    arguments the task's signature refuses): only this job fails, never the tick."""


def _stored_json(model: PeriodicTask, field: str, empty: str, kind: type, what: str):
    raw = getattr(model, field) or empty
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise CannotSend(f"{field} is not valid JSON ({exc})") from exc
    if not isinstance(value, kind):
        raise CannotSend(f"{field} must be {what}, not {type(value).__name__}: {raw[:80]}")
    return value


def check_arguments(task, args, kwargs) -> None:
    """The check Celery makes when a message is sent (``Task.typing``), made before sending:
    an unknown keyword or a missing argument is this job's error, said in one line."""
    if task is None or not getattr(task, "typing", False):
        return
    try:
        header = task.__header__
    except AttributeError:
        return
    try:
        header(*args, **kwargs)
    except TypeError as exc:
        raise CannotSend(str(exc).replace(f"{header.__name__}()", f"{task.name}()")) from exc
    own_rules = getattr(task, "argument_check", None)  # the job's own (a task option)
    if own_rules is not None:
        try:
            own_rules(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise CannotSend(str(exc)) from exc


def field_errors(model: PeriodicTask, app=None) -> dict[str, str]:
    """What is wrong with the job's stored message fields, by field (empty when it can be sent):
    for the admin form and for scripts (``validate_job``)."""
    app, errors, values = app or current_app, {}, {}
    for field, empty, kind, what in (("args", "[]", list, "a JSON list"),
                                     ("kwargs", "{}", dict, "a JSON object"),
                                     ("headers", "{}", dict, "a JSON object")):
        try:
            values[field] = _stored_json(model, field, empty, kind, what)
        except CannotSend as exc:
            errors[field] = str(exc)
    if "args" in values and "kwargs" in values:
        try:
            check_arguments(known_task(app, model.task), values["args"], values["kwargs"])
        except CannotSend as exc:
            text = str(exc)
            on_args = "positional" in text or "multiple values" in text or not values["kwargs"]
            errors["args" if on_args else "kwargs"] = text
    return errors


_modules_imported = False


def known_task(app, name: str):
    """The task registered as ``name`` in this process, importing every app's ``tasks`` module
    once first if needed (beat and web processes do not import them by themselves, and the
    checks need the task's signature and rules)."""
    global _modules_imported
    task = app.tasks.get(name)
    if task is None and not _modules_imported:
        from scheduling.engine.checks import registered_task_names

        registered_task_names()
        _modules_imported = True
        task = app.tasks.get(name)
    return task


def message_for(model: PeriodicTask, slot: dt.datetime, kind: str, app=None):
    """``(task name, args, kwargs, options)`` exactly as beat sends it for ``model`` (the options
    django-celery-beat's ``ModelEntry`` builds), or ``CannotSend`` saying why it cannot be."""
    app = app or current_app
    args = _stored_json(model, "args", "[]", list, "a JSON list")
    kwargs = _stored_json(model, "kwargs", "{}", dict, "a JSON object")
    headers = _stored_json(model, "headers", "{}", dict, "a JSON object")
    options = {name: getattr(model, name) for name in ("queue", "exchange", "routing_key",
                                                      "priority")
               if getattr(model, name) is not None}
    if model.expires_:
        options["expires"] = model.expires_
    headers.update(periodic_task_name=model.name, scheduled_slot=slot.isoformat(),
                   dispatch_kind=kind, celery_beat_task=True)
    options["headers"] = headers
    check_arguments(known_task(app, model.task), args, kwargs)
    return model.task, args, kwargs, options


def publish(model: PeriodicTask, row: Dispatch, *, app=None, producer=None) -> None:
    app = app or current_app
    name, args, kwargs, options = message_for(model, row.slot, row.kind, app)
    task = known_task(app, name)
    if task is not None:
        # apply_async puts the task's own limits and routing in the message, like stock beat.
        task.apply_async(args, kwargs, task_id=row.task_id, producer=producer, **options)
    else:
        app.send_task(name, args, kwargs, task_id=row.task_id, producer=producer, **options)


def dispatch(model: PeriodicTask, *, slot: dt.datetime, now: dt.datetime, by: str,
             kind: str = Dispatch.Kind.SCHEDULED, app=None, producer=None) -> Dispatch | None:
    """Reserve ``slot`` of ``model``, send the task, confirm. None if the slot was already
    taken. See ``dispatch_many``."""
    rows = dispatch_many([(model, slot)], now=now, by=by, kind=kind, app=app, producer=producer)
    return rows[0] if rows else None


def dispatch_many(due, *, now, by, kind=Dispatch.Kind.SCHEDULED, app=None, producer=None):
    """Send every ``(model, slot)`` in ``due`` whose slot is still free; return their rows.

    (1) reserve all rows in one statement; (2) publish each row we reserved; (3) confirm them.
    If publishing fails the row is removed so the slot is tried again, and the error raised; if
    the process dies between (1) and (3), the leader re-sends reserved rows (``resend_reserved``)
    with the same task id. Four queries for any number of slots.
    """
    sent = []
    for row in ledger.reserve(due, kind=kind, now=now, by=by):
        try:
            publish(row.periodic_task, row, app=app, producer=producer)
        except CannotSend as exc:
            # This job's own error: its slot is done (failed, with the reason); the others of
            # the tick go out as planned.
            ledger.cannot_send(row.task_id, str(exc), now=now)
            unsendable(row.periodic_task, str(exc))
            continue
        except Exception:
            ledger.unreserve(row.task_id)
            ledger.confirm(r.task_id for r in sent)
            raise
        sent.append(row)
        log.info("beat.dispatched", job=row.periodic_task.name, task=row.task_name,
                 slot=row.slot.isoformat(), task_id=row.task_id, kind=kind)
    ledger.confirm(row.task_id for row in sent)
    return sent


_reported: dict[int, str] = {}


def unsendable(model: PeriodicTask, error: str) -> None:
    """Log ERROR once per job and distinct error (not once per tick)."""
    if _reported.get(model.pk) != error:
        _reported[model.pk] = error
        log.error("beat.cannot_send", job=model.name, task=model.task, error=error,
                  hint="correct the job's arguments in the admin; the next slot uses them")


def resend_reserved(*, older_than: dt.datetime, app=None, producer=None) -> int:
    """Send again the rows a beat reserved but died before confirming (same task id).

    At-least-once: if the message did go out before the crash, the task runs twice under one id;
    every job is idempotent, so the second run changes nothing.
    """
    sent = 0
    for row in ledger.reserved_before(older_than):
        if row.periodic_task is None:  # the job was deleted between reserving and sending
            ledger.cannot_send(row.task_id, f"the job {row.job_name!r} was deleted before its "
                               "message went out", now=row.dispatched_at)
            continue
        try:
            publish(row.periodic_task, row, app=app, producer=producer)
        except CannotSend as exc:
            ledger.cannot_send(row.task_id, str(exc), now=row.dispatched_at)
            continue
        sent += ledger.confirm([row.task_id])
        log.warning("beat.resent_reserved", job=row.periodic_task.name, task_id=row.task_id,
                    slot=row.slot.isoformat())
    return sent


def running(task_ids, now: dt.datetime) -> set[int]:
    """Jobs among ``task_ids`` with a run started and not finished within the hard limit."""
    limit = dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60)
    started = Dispatch.objects.filter(periodic_task_id__in=task_ids).running(since=now - limit)
    return {periodic_task_id for periodic_task_id, _ in started.values()}


class Dispatcher:
    """The leader's dispatch step: due jobs through the policies, sent in one batch."""

    def __init__(self, *, instance: str, app):
        self.instance, self.app = instance, app
        self.resent_at: dt.datetime | None = None
        self.leading_since: dt.datetime | None = None  # set by the scheduler on taking the lease

    def resend_if_due(self, now: dt.datetime, producer) -> None:
        """At most every few seconds: re-send rows a dead beat reserved, and resolve runs that
        can never finish (``ledger.mark_lost``) so the overlap policy stops waiting for them."""
        if self.resent_at is None or now - self.resent_at >= RESEND_AFTER / 3:
            self.resent_at = now
            # A worker's registry row is only evidence once this beat has itself reached the
            # database for longer than the stale bound (after an outage every row is old).
            settled_for = (now - self.leading_since).total_seconds() if self.leading_since else 0
            ledger.mark_lost(now, silence_counts=settled_for >= settings.SCHEDULING_WORKER_STALE)
            resend_reserved(older_than=now - RESEND_AFTER, app=self.app, producer=producer)

    def send_due(self, planner: Planner, now: dt.datetime, producer) -> list[Dispatch]:
        due_jobs = planner.pop_due(now)
        if not due_jobs:
            return []
        busy = running([job.model.pk for job in due_jobs], now)
        to_send = []
        try:
            for job in due_jobs:
                decision = job.decide(now, running=job.model.pk in busy)
                if decision is None:
                    continue
                job.last = decision.last
                self.record(job, decision, now)
                if decision.send is not None:
                    to_send.append((job.model, decision.send))
            sent = dispatch_many(to_send, now=now, by=self.instance, app=self.app,
                                 producer=producer)
        finally:
            for job in due_jobs:
                planner.push(job)
        count_runs(sent, now)
        return sent

    def record(self, job, decision, now) -> None:
        if decision.expired:
            disable_expired(job.model, now=now, by=self.instance)
        if decision.missed is not None:
            missed = decision.missed
            ledger.record_missed(job.model, job.schedule, missed.first, missed.last,
                                 missed.count, now=now, by=self.instance)
        if decision.skipped is not None:
            ledger.record_skipped(job.model, decision.skipped, now=now, by=self.instance)


def disable_expired(model: PeriodicTask, *, now: dt.datetime, by: str) -> bool:
    """Disable a job whose ``expires`` has passed, as django-celery-beat does, recorded in the
    audit as done by the scheduler with the reason."""
    if not PeriodicTask.objects.filter(pk=model.pk, enabled=True).update(enabled=False):
        return False
    ScheduleChange.objects.create(
        periodic_task=model, task_name=model.name, action=ScheduleChange.Action.PAUSED,
        changed_at=now, changes={"enabled": [True, False]},
        reason=f"expired at {model.expires:%Y-%m-%d %H:%M:%S} UTC: disabled by the scheduler "
               f"({by})")
    log.info("beat.disabled_expired", job=model.name, expires=model.expires.isoformat())
    return True


def count_runs(sent: list[Dispatch], now: dt.datetime) -> None:
    """django-celery-beat's own bookkeeping on the job rows; a one-off job is disabled."""
    if not sent:
        return
    ids = [row.periodic_task_id for row in sent]
    PeriodicTask.objects.filter(pk__in=ids).update(
        last_run_at=now, total_run_count=F("total_run_count") + 1)
    one_off = [row.periodic_task_id for row in sent if row.periodic_task.one_off]
    if one_off:
        PeriodicTask.objects.filter(pk__in=one_off).update(enabled=False)
