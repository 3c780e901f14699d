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
from django.db import DatabaseError, InterfaceError
from django.utils import timezone

from scheduling.beat_models import Dispatch

log = structlog.get_logger(__name__)
FINISHED = (Dispatch.State.SUCCEEDED, Dispatch.State.FAILED)


def _scheduled(request) -> bool:
    return bool(request is not None and getattr(request, "scheduled_slot", None))


def _mark(task_id: str, **fields) -> None:
    try:
        Dispatch.objects.filter(task_id=task_id).update(**fields)
    except (DatabaseError, InterfaceError) as exc:
        log.error("ledger.write_failed", task_id=task_id, error=str(exc), **{
            k: str(v) for k, v in fields.items()})


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task is not None and _scheduled(task.request):
        task.request.ledger_started_at = timezone.now()  # kept in memory until the run ends


def on_task_success(sender=None, result=None, **kwargs):
    if sender is not None and _scheduled(sender.request):
        _mark(sender.request.id, state=Dispatch.State.SUCCEEDED,
              started_at=getattr(sender.request, "ledger_started_at", None),
              finished_at=timezone.now(), result=_summary(result))


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
