"""The base class of every task in the project (``Celery(task_cls=...)`` in project/celery.py).

It subclasses Celery's ``DjangoTask`` (so ``delay_on_commit`` keeps working) and adds two things:

* ``on_failure`` records a dead letter when a task fails for good (Celery calls it once, after
  the last retry; a retry raises ``Retry`` and never gets here). The failures that happen in the
  worker's main process instead (pool process killed, hard time limit) arrive through the
  ``task_failure`` signal (``deadletters.capture``); a unique task id absorbs the double.
* **poison messages**: each delivery of a message is counted (per task id and retry number)
  before the task runs; a message delivered more than ``DEADLETTERS_MAX_DELIVERIES`` times, which
  with late acknowledgement means it kept killing its worker process, is rejected and dead-lettered
  instead of being run again.
* **database outages**: the dead letter and the delivery count wait for the database
  (``project.database``); when it stays away, the message is put back on its queue rather than
  acknowledged with nothing recorded.
"""

from billiard.einfo import ExceptionInfo
from celery.contrib.django.task import DjangoTask
from celery.exceptions import Reject


class PoisonMessage(Exception):
    """A message that was delivered too many times without finishing."""


class BaseTask(DjangoTask):
    def __call__(self, *args, **kwargs):
        request = self.request
        try:
            if not request.called_directly and self.acks_late:
                self._refuse_poison(request)
            return super().__call__(*args, **kwargs)
        except Reject as exc:
            # A rejected message is failed by the worker's main process, which does not have
            # this request's details (worker, queue, headers): record it here, where they are.
            if not exc.requeue and not request.called_directly:
                from deadletters.capture import record_failure

                record_failure(self, request.id, exc, ExceptionInfo(), args, kwargs)
            raise

    def _refuse_poison(self, request):
        from deadletters.capture import count_delivery
        from project.database import DatabaseUnavailable

        try:
            deliveries, limit = count_delivery(request.id, request.retries or 0)
        except DatabaseUnavailable as exc:  # cannot tell: put the message back for later
            raise Reject(exc, requeue=True) from exc
        if deliveries > limit:
            raise Reject(
                PoisonMessage(
                    f"delivered {deliveries} times without finishing (limit {limit}); "
                    "it most likely kills its worker process"
                ),
                requeue=False,
            )

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from deadletters.capture import record_failure

        request = self.request
        record_failure(self, task_id, exc, einfo, args, kwargs,
                       put_back=bool(self.acks_late and not request.called_directly
                                     and not request.is_eager))
        super().on_failure(exc, task_id, args, kwargs, einfo)
