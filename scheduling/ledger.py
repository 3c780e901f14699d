"""Worker side of the dispatch ledger: when a scheduled run finishes, its row gets succeeded or
failed, when it started and finished, and what it returned: one UPDATE by task id. Connected in
``SchedulingConfig.ready()``.

"Started" is not written here: django-celery-results already stores a STARTED result with
``date_started`` for every task (``CELERY_TASK_TRACK_STARTED``), and a second write before every
run cost a third of the throughput of short tasks (bench/README.md). ``Dispatch.objects.running``
reads it from there.

Only messages beat (or "run now") sent carry the ``periodic_task_name`` header; other tasks cost
nothing here. A ledger write that fails is logged and never fails the task itself.
"""

import structlog
from django.db import DatabaseError, InterfaceError, transaction
from django.utils import timezone

from scheduling.beat_models import Dispatch

log = structlog.get_logger(__name__)
FINISHED = (Dispatch.State.SUCCEEDED, Dispatch.State.FAILED)


def _scheduled(request) -> bool:
    return bool(request is not None and getattr(request, "scheduled_slot", None))


def _mark(task_id: str, **fields) -> int | None:
    """Rows updated, or None when the write failed (logged)."""
    try:
        # A run that already succeeded stays succeeded (a second delivery failing does not undo
        # the work the first one did; its dead letter says what went wrong).
        return Dispatch.objects.filter(task_id=task_id).exclude(
            state=Dispatch.State.SUCCEEDED).update(**fields)
    except (DatabaseError, InterfaceError) as exc:
        log.error("ledger.write_failed", task_id=task_id, error=str(exc), **{
            k: str(v) for k, v in fields.items()})
        return None


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task is not None and _scheduled(task.request):
        task.request.ledger_started_at = timezone.now()  # kept in memory until the run ends


def on_task_success(sender=None, result=None, **kwargs):
    if sender is not None and _scheduled(sender.request):
        task_id, summary = sender.request.id, _summary(result)
        updated = _mark(task_id, state=Dispatch.State.SUCCEEDED,
                        started_at=getattr(sender.request, "ledger_started_at", None),
                        finished_at=timezone.now(), result=summary)
        if updated == 0:
            try:
                _add_second_run(task_id, summary)
            except (DatabaseError, InterfaceError) as exc:
                log.error("ledger.write_failed", task_id=task_id, error=str(exc))


def _add_second_run(task_id: str, summary: dict | None) -> None:
    """The same message ran again after it had succeeded: its acknowledgement was lost (Redis
    went away just as the run ended), so Redis delivered it again after the visibility timeout.
    The jobs are idempotent, but the second run may still find new work; add its counts to the
    row's, so the ledger's counts keep adding up to what the runs did, and count the runs."""
    with transaction.atomic():
        row = Dispatch.objects.select_for_update().filter(
            task_id=task_id, state=Dispatch.State.SUCCEEDED).first()
        if row is None:
            return
        merged = dict(row.result or {})
        for key, value in (summary or {}).items():
            if _is_count(value) and _is_count(merged.get(key)):
                merged[key] += value
            else:
                merged[key] = value
        merged["runs"] = (row.result or {}).get("runs", 1) + 1
        row.result, row.finished_at = merged, timezone.now()
        row.save(update_fields=["result", "finished_at"])
    log.warning("ledger.ran_again", task_id=task_id, runs=merged["runs"])


def _is_count(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(result):
    """A job's returned counts, kept small: a dict of scalars, anything else dropped."""
    if not isinstance(result, dict):
        return None
    return {
        str(k): v for k, v in list(result.items())[:20]
        if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 100)
    }


def on_task_failure(sender=None, task_id=None, **kwargs):
    # Sent for the final failure only (a retry raises Retry, not a failure), including from the
    # worker's main process when the pool process was killed or hit the hard time limit, where
    # ``sender.request`` is not this task's: so match by task id alone, like the other handlers.
    if task_id:
        started = getattr(sender.request, "ledger_started_at", None) if sender else None
        _mark(task_id, state=Dispatch.State.FAILED, started_at=started,
              finished_at=timezone.now())
