"""The result backend: django-celery-results' database backend, riding out a database outage.

``store_result`` goes through ``project.database.through_outage``: while PostgreSQL is away the
pool process waits for it (up to ``DB_OUTAGE_WAIT``) instead of failing the write, which Celery
would report as "Exception raised outside body" and acknowledge the message with no retry and no
dead letter. When the database stays away past the wait:

* STARTED (before the body runs) and FAILURE (before the dead letter is written): the message is
  put back on its queue (``Reject(requeue=True)``) and runs again once the database is back:
  nothing is done twice, nothing vanishes;
* RETRY (the retry message is already sent) and SUCCESS (the work is done): logged, and the run
  goes on; beat's ledger check later resolves the run's row from what is known.

Each state is stored in one statement, an upsert on the unique task id, with the fields
django-celery-results writes; its own ``store_result`` reads the row first and then inserts or
saves it (two to four statements), which was most of a short task's time in the worker
(bench/README.md, "Workers against the usual setup").
"""

from __future__ import annotations

import structlog
from celery import current_task, states
from celery.exceptions import Reject
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend

from project.database import DatabaseUnavailable, through_outage

log = structlog.get_logger(__name__)
PUT_BACK = frozenset({states.STARTED, states.FAILURE})


UPDATED = ("status", "result", "traceback", "meta", "content_encoding", "content_type",
           "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker", "date_done")


class ResultBackend(DatabaseBackend):
    def _store_result(self, task_id, result, status, traceback=None, request=None, using=None):
        content_type, content_encoding, encoded = self.encode_content(result)
        _, _, meta = self.encode_content({**self._get_meta_from_request(request),
                                          "children": self.current_task_children(request)})
        row = self.TaskModel(**{
            "task_id": task_id, "status": status, "result": encoded, "traceback": traceback,
            "meta": meta, "content_type": content_type, "content_encoding": content_encoding,
            **self._get_extended_properties(request, traceback)})
        update = list(UPDATED)
        if status == states.STARTED:  # (only STARTED sets it, as django-celery-results does)
            row.date_started = timezone.now()
            update.append("date_started")
        self.TaskModel._default_manager.using(using).bulk_create(
            [row], update_conflicts=True, unique_fields=["task_id"], update_fields=update)
        return result

    def store_result(self, task_id, result, state, traceback=None, request=None, **kwargs):
        store = super().store_result
        try:
            return through_outage(
                lambda: store(task_id, result, state, traceback, request=request, **kwargs),
                what=f"the {state} result of {task_id}")
        except DatabaseUnavailable as exc:
            if state not in PUT_BACK:
                log.error("result.not_stored", task_id=task_id, state=state, reason=str(exc))
                return result
            if not getattr(current_task, "acks_late", False):
                raise  # acknowledged on receipt: Celery's own handling
            log.error("run.put_back", task_id=task_id, state=state, reason=str(exc))
            raise Reject(exc, requeue=True) from exc
