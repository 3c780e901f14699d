"""The worker registry (model ``WorkerProcess``), written by each worker about itself.

On ``worker_ready`` the worker's main process upserts its row (hostname, pid, the queues it
consumes with their exchange and routing key, the task names it has registered, concurrency) and
starts a daemon thread that refreshes ``last_seen_at`` every ``SCHEDULING_WORKER_HEARTBEAT``
seconds; ``worker_shutdown`` stamps ``stopped_at``. A worker killed without a clean stop drops out
of ``WorkerProcess.objects.live()`` after ``SCHEDULING_WORKER_STALE`` seconds. A failed write is
logged and tried again on the next beat of the thread: the registry never fails a worker.
"""

from __future__ import annotations

import os

import structlog
from django.conf import settings
from django.utils import timezone

from project.threads import Repeating
from scheduling.engine.models import WorkerProcess

log = structlog.get_logger(__name__)


def describe(consumer) -> dict:
    """What the registry keeps about the worker ``consumer`` belongs to."""
    app = consumer.app
    queues = [
        {"name": queue.name, "exchange": queue.exchange.name if queue.exchange else "",
         "type": queue.exchange.type if queue.exchange else "direct",
         "routing_key": queue.routing_key or ""}
        for queue in app.amqp.queues.consume_from.values()
    ]
    tasks = sorted(name for name in app.tasks if not name.startswith("celery."))
    concurrency = getattr(getattr(consumer, "controller", None), "concurrency", None)
    return {"queues": queues, "tasks": tasks, "concurrency": concurrency}


def record(hostname: str, *, queues, tasks, concurrency=None, pid=None) -> WorkerProcess:
    now = timezone.now()
    row, _ = WorkerProcess.objects.update_or_create(
        hostname=hostname,
        defaults={"pid": pid or os.getpid(), "queues": queues, "tasks": tasks,
                  "concurrency": concurrency, "started_at": now, "last_seen_at": now,
                  "stopped_at": None},
    )
    return row


class Registration:
    def __init__(self, hostname: str, fields: dict, every: float):
        self.hostname, self.fields = hostname, fields
        self.loop = Repeating(self.touch, every, failure_event="worker.registry_write_failed")

    def touch(self) -> None:
        updated = WorkerProcess.objects.filter(hostname=self.hostname).update(
            last_seen_at=timezone.now(), stopped_at=None)
        if not updated:  # the row was deleted (or the first write failed): write it again
            record(self.hostname, **self.fields)


_registration: Registration | None = None


def on_worker_ready(sender=None, **kwargs) -> None:
    global _registration
    hostname = getattr(sender, "hostname", None)
    if not hostname or _registration is not None:
        return
    fields = describe(sender)
    _registration = Registration(hostname, fields, settings.SCHEDULING_WORKER_HEARTBEAT)
    try:
        record(hostname, **fields)
        log.info("worker.registered", hostname=hostname,
                 queues=[queue["name"] for queue in fields["queues"]], tasks=len(fields["tasks"]))
    except Exception as exc:
        log.warning("worker.registry_write_failed", error=repr(exc))
    _registration.loop.start("worker-registry")


def on_worker_shutdown(sender=None, **kwargs) -> None:
    global _registration
    if _registration is None:
        return
    _registration.loop.stopped.set()
    try:
        WorkerProcess.objects.filter(hostname=_registration.hostname).update(
            stopped_at=timezone.now())
    except Exception as exc:
        log.warning("worker.registry_write_failed", error=repr(exc))
    _registration = None
