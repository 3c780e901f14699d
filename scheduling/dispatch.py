"""The one path by which a periodic task is sent: beat uses it for each slot, the admin's
"run now" for a manual run. Ledger row first, then the message, then the row is confirmed.

Headers added to every message (read back on the worker from ``task.request``):
``periodic_task_name`` (django-celery-beat's own header, which django-celery-results stores on
the result), ``scheduled_slot`` (ISO 8601, UTC) and ``dispatch_kind``.
"""

from __future__ import annotations

import datetime as dt
import uuid

import structlog
from celery import current_app
from django.db import IntegrityError, transaction
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from scheduling.beat_models import Dispatch

log = structlog.get_logger(__name__)


def message_for(model: PeriodicTask, slot: dt.datetime, kind: str, app=None):
    """``(task name, args, kwargs, options)`` exactly as beat sends it for ``model``."""
    entry = ModelEntry(model, app=app or current_app)
    options = dict(entry.options)
    headers = dict(options.get("headers") or {})
    headers.update(
        periodic_task_name=model.name,
        scheduled_slot=slot.isoformat(),
        dispatch_kind=kind,
        celery_beat_task=True,
    )
    options["headers"] = headers
    return entry.task, entry.args, entry.kwargs, options


def publish(model: PeriodicTask, row: Dispatch, *, app=None, producer=None) -> None:
    app = app or current_app
    name, args, kwargs, options = message_for(model, row.slot, row.kind, app)
    task = app.tasks.get(name)
    if task is not None:
        # apply_async puts the task's own limits and routing in the message, like stock beat.
        task.apply_async(args, kwargs, task_id=row.task_id, producer=producer, **options)
    else:
        app.send_task(name, args, kwargs, task_id=row.task_id, producer=producer, **options)


def dispatch(
    model: PeriodicTask,
    *,
    slot: dt.datetime,
    now: dt.datetime,
    by: str,
    kind: str = Dispatch.Kind.SCHEDULED,
    app=None,
    producer=None,
) -> Dispatch | None:
    """Reserve ``slot`` in the ledger, send the task, confirm. None if the slot was taken.

    Steps: (1) insert the ledger row (state reserved) in its own transaction: a unique conflict
    means another beat, or this one before a restart, already sent this slot; (2) publish;
    (3) compare-and-set the row to sent. If publishing fails the row is deleted so the slot is
    tried again; if the process dies between (1) and (3), the leader re-sends reserved rows
    (``resend_reserved``) with the same task id.
    """
    row = Dispatch(
        periodic_task=model,
        slot=slot,
        kind=kind,
        state=Dispatch.State.RESERVED,
        task_id=str(uuid.uuid4()),
        task_name=model.task,
        dispatched_by=by,
        dispatched_at=now,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
    except IntegrityError:
        log.info("beat.slot_taken", job=model.name, slot=slot.isoformat())
        return None
    try:
        publish(model, row, app=app, producer=producer)
    except Exception:
        Dispatch.objects.filter(pk=row.pk, state=Dispatch.State.RESERVED).delete()
        raise
    Dispatch.objects.filter(pk=row.pk, state=Dispatch.State.RESERVED).update(
        state=Dispatch.State.SENT
    )
    log.info(
        "beat.dispatched", job=model.name, task=model.task, slot=slot.isoformat(),
        task_id=row.task_id, kind=kind,
    )
    return row


def resend_reserved(*, older_than: dt.datetime, app=None, producer=None) -> int:
    """Send again the rows a beat reserved but died before confirming (same task id).

    At-least-once: if the message did go out before the crash, the task runs twice under one id;
    every job is idempotent, so the second run changes nothing.
    """
    rows = Dispatch.objects.filter(
        state=Dispatch.State.RESERVED, dispatched_at__lt=older_than
    ).select_related(
        "periodic_task__crontab", "periodic_task__interval", "periodic_task__solar",
        "periodic_task__clocked",
    )
    sent = 0
    for row in rows:
        publish(row.periodic_task, row, app=app, producer=producer)
        sent += Dispatch.objects.filter(pk=row.pk, state=Dispatch.State.RESERVED).update(
            state=Dispatch.State.SENT
        )
        log.warning("beat.resent_reserved", job=row.periodic_task.name, task_id=row.task_id,
                    slot=row.slot.isoformat())
    return sent
