"""Operations on dead letters that talk to the broker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from celery import current_app
from django.db import transaction
from django.utils import timezone

from deadletters.models import DeadLetter


@dataclass
class RequeueOutcome:
    requeued: list[DeadLetter]
    refused: list[tuple[DeadLetter, str]]  # (row, reason) left pending
    already: list[DeadLetter]  # decided by someone else first


def known_task_names() -> set[str]:
    from scheduling.beat import registered_task_names

    return registered_task_names()


def requeue(rows, *, by, now=None) -> RequeueOutcome:
    """Send each pending dead letter's task again, by name, with its original arguments and
    queue, after the surrounding transaction commits; record the new task id.

    Compare-and-set from pending to requeued makes a double submit or two admins at once send
    it once. A task name this code base no longer registers, or a row whose arguments were not
    kept faithfully (not replayable), is refused with the reason and stays pending.
    """
    now = now or timezone.now()
    known = known_task_names()
    outcome = RequeueOutcome([], [], [])
    for row in rows:
        if row.status != DeadLetter.Status.PENDING:
            outcome.already.append(row)
            continue
        if not row.replayable:
            outcome.refused.append((row, f"not replayable: {row.not_replayable_reason}"))
            continue
        if row.task_name not in known:
            outcome.refused.append((row, f"no worker knows the task {row.task_name!r} any more"))
            continue
        new_id = str(uuid.uuid4())
        if not row.claim(to=DeadLetter.Status.REQUEUED, by=by, now=now,
                         requeued_task_id=new_id):
            outcome.already.append(row)
            continue
        transaction.on_commit(lambda row=row, new_id=new_id: _send(row, new_id))
        outcome.requeued.append(row)
    return outcome


def _send(row: DeadLetter, task_id: str) -> None:
    headers = {"requeued_from": str(row.pk)}
    if row.periodic_task_name:
        headers["periodic_task_name"] = row.periodic_task_name
    options = {"queue": row.queue} if row.queue else {}
    current_app.send_task(
        row.task_name, args=row.args, kwargs=row.kwargs, task_id=task_id, headers=headers,
        **options,
    )


def ignore(rows, *, by, reason: str, now=None) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Mark pending dead letters ignored with a reason: ``(ignored, already decided)``."""
    now = now or timezone.now()
    done, already = [], []
    for row in rows:
        if row.claim(to=DeadLetter.Status.IGNORED, by=by, now=now, note=reason):
            done.append(row)
        else:
            already.append(row)
    return done, already
