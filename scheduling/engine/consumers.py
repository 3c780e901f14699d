"""The leading beat checks that someone takes what it sends: once a minute
(``SCHEDULING_CONSUMER_CHECK_SECONDS``), in a thread, it asks the workers which queues they
consume (``celery inspect active_queues``, one broadcast) and logs an ERROR for every queue an
enabled job routes to that no live worker consumes, naming the jobs: the work would pile up
unseen."""

from __future__ import annotations

import datetime as dt
import re
import threading
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Route:
    """Where a job's message goes: a queue, or an exchange and routing key (``queue`` None)."""

    queue: str | None
    exchange: str = ""
    routing_key: str = ""

    def __str__(self) -> str:
        if self.queue:
            return f"queue '{self.queue}'"
        return f"exchange '{self.exchange}' with routing key '{self.routing_key}'"

    def consumed_by(self, queues) -> bool:
        """Does one of ``queues`` (the registry's ``{name, exchange, type, routing_key}``) take
        this message?"""
        for queue in queues:
            if self.queue is not None:
                if queue.get("name") == self.queue:
                    return True
            elif queue.get("exchange") == self.exchange and _binds(queue, self.routing_key):
                return True
        return False


def _binds(queue: dict, key: str) -> bool:
    kind, binding = queue.get("type") or "direct", queue.get("routing_key") or ""
    if kind == "fanout":
        return True
    if kind == "topic":  # AMQP topic: * one word, # zero or more words
        pattern = re.escape(binding).replace(r"\#", ".*").replace(r"\*", "[^.]+")
        return re.fullmatch(pattern, key) is not None
    return binding == key


def route_of(app, task: str, queue: str | None = None, exchange: str | None = None,
             routing_key: str | None = None) -> Route:
    """The route of a job's message: its own queue, its exchange and routing key, a routing key
    on the default exchange (the queue of that name), else Celery's routing for the task
    (task_routes, the task's queue option, the default queue)."""
    if queue:
        return Route(queue)
    if exchange:
        return Route(None, exchange, routing_key or "")
    if routing_key:
        return Route(routing_key)
    routed = app.amqp.router.route({}, task).get("queue")
    return Route(getattr(routed, "name", None) or app.conf.task_default_queue)


def queue_for(app, task: str, queue: str | None = None, routing_key: str | None = None) -> str:
    """The queue a job's message goes to (see ``route_of``)."""
    return route_of(app, task, queue, None, routing_key).queue


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
