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
from django.db import transaction
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
    """Reserve ``slot`` of ``model`` in the ledger, send the task, confirm. None if the slot was
    already taken. See ``dispatch_many``."""
    rows = dispatch_many([(model, slot)], now=now, by=by, kind=kind, app=app, producer=producer)
    return rows[0] if rows else None


def dispatch_many(due, *, now, by, kind=Dispatch.Kind.SCHEDULED, app=None, producer=None):
    """Send every ``(model, slot)`` in ``due`` whose slot is still free; return their rows.

    Steps: (1) insert all ledger rows (state reserved) in one statement that skips conflicts
    with the unique (periodic task, slot) constraint: a conflict means another beat, or this
    one before a restart, already sent that slot; (2) publish each row we did insert; (3) mark
    them sent (compare-and-set from reserved). If publishing fails the row is deleted so the slot
    is tried again; if the process dies between (1) and (3), the leader re-sends reserved rows
    (``resend_reserved``) with the same task id. Four queries for any number of slots.
    """
    wanted = [
        Dispatch(
            periodic_task=model, slot=slot, kind=kind, state=Dispatch.State.RESERVED,
            task_id=str(uuid.uuid4()), task_name=model.task, dispatched_by=by, dispatched_at=now,
        )
        for model, slot in due
    ]
    if not wanted:
        return []
    with transaction.atomic():
        if kind != Dispatch.Kind.MANUAL:
            # Each job's timeline only moves forward: under the job's row lock, a slot at or
            # before the job's last ledger slot (sent, missed or skipped by another beat) is
            # not inserted. This keeps a stale leader from filling in a slot a new leader has
            # already recorded as missed.
            last = lock_timelines({row.periodic_task_id for row in wanted})
            wanted = [row for row in wanted
                      if last.get(row.periodic_task_id) is None
                      or row.slot > last[row.periodic_task_id]]
        Dispatch.objects.bulk_create(wanted, ignore_conflicts=True)
    ours = set(
        Dispatch.objects.filter(task_id__in=[row.task_id for row in wanted]).values_list(
            "task_id", flat=True
        )
    )
    sent = []
    for row in wanted:
        if row.task_id not in ours:
            log.info("beat.slot_taken", job=row.periodic_task.name, slot=row.slot.isoformat())
            continue
        try:
            publish(row.periodic_task, row, app=app, producer=producer)
        except Exception:
            Dispatch.objects.filter(task_id=row.task_id, state=Dispatch.State.RESERVED).delete()
            Dispatch.objects.filter(
                task_id__in=[r.task_id for r in sent], state=Dispatch.State.RESERVED
            ).update(state=Dispatch.State.SENT)
            raise
        sent.append(row)
        log.info(
            "beat.dispatched", job=row.periodic_task.name, task=row.task_name,
            slot=row.slot.isoformat(), task_id=row.task_id, kind=kind,
        )
    Dispatch.objects.filter(
        task_id__in=[row.task_id for row in sent], state=Dispatch.State.RESERVED
    ).update(state=Dispatch.State.SENT)
    return sent


def lock_timelines(task_ids) -> dict:
    """Lock the periodic task rows (until the transaction ends) and return each one's last
    ledger slot. Every ledger insert for a schedule slot happens under this lock."""
    list(PeriodicTask.objects.select_for_update().filter(pk__in=task_ids).values_list("pk"))
    return Dispatch.objects.last_slots(task_ids)


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
