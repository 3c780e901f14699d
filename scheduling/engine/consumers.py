"""The leading beat checks that someone takes what it sends: once a minute
(``SCHEDULING_CONSUMER_CHECK_SECONDS``), in a thread, it asks the workers which queues they
consume (``celery inspect active_queues``, one broadcast) and logs an ERROR for every queue an
enabled job routes to that no live worker consumes, naming the jobs: the work would pile up
unseen."""

from __future__ import annotations

import datetime as dt
import threading

import structlog

log = structlog.get_logger(__name__)


def queue_for(app, task: str, queue: str | None = None, routing_key: str | None = None) -> str:
    """The queue a job's message goes to: its own queue (or routing key on the default exchange),
    else Celery's routing for the task (task_routes, the task's queue option, the default)."""
    if queue or routing_key:
        return queue or routing_key
    routed = app.amqp.router.route({}, task).get("queue")
    return getattr(routed, "name", None) or app.conf.task_default_queue


class ConsumerWatch:
    def __init__(self, app, every: float):
        self.app, self.every = app, dt.timedelta(seconds=every)
        self.checked_at: dt.datetime | None = None

    def maybe_check(self, now: dt.datetime, models) -> threading.Thread | None:
        """Check in a thread, once per interval; the first check one interval after this beat
        began to lead (workers started beside it need a moment to answer)."""
        if not self.every:
            return None
        if self.checked_at is None:
            self.checked_at = now
            return None
        if now - self.checked_at < self.every:
            return None
        self.checked_at = now
        wanted: dict[str, list[str]] = {}
        for model in models:
            queue = queue_for(self.app, model.task, model.queue, model.routing_key)
            wanted.setdefault(queue, []).append(model.name)
        thread = threading.Thread(target=self.check, args=(wanted,), name="consumer-check",
                                  daemon=True)
        thread.start()
        return thread

    def check(self, wanted: dict[str, list[str]]) -> dict[str, list[str]]:
        """The queues in ``wanted`` nobody consumes (each logged as an ERROR)."""
        try:
            replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception as exc:  # broker down: beat's own send errors say so
            log.warning("beat.consumer_check_failed", error=repr(exc))
            return {}
        consumed = {queue["name"] for queues in replies.values() for queue in queues or ()}
        missing = {queue: jobs for queue, jobs in wanted.items() if queue not in consumed}
        for queue, jobs in sorted(missing.items()):
            log.error("beat.queue_without_consumer", queue=queue, jobs=sorted(jobs),
                      workers=len(replies),
                      hint=f"start a worker with -Q {queue}: these jobs' messages pile up")
        return missing
