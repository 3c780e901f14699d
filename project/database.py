"""Riding out a database outage in the worker: the writes around a run wait for PostgreSQL.

A PostgreSQL restart, failover or network blip must not lose a run. Inside a task's body a
database error is the task's own (the jobs retry it with backoff, ``JOB_OPTIONS``); the writes
*around* the body (the result backend's STARTED / RETRY / SUCCESS / FAILURE rows, the ledger, the
dead letter, the delivery count) go through ``through_outage``: on a connection error it closes
the broken connection and tries again, 0.2 s doubling to 5 s apart, for up to
``DB_OUTAGE_WAIT`` seconds, then raises ``DatabaseUnavailable``. The callers decide what "still
down" means for them (put the message back, or log and go on); see the README, "When PostgreSQL
goes away".

Only in a worker running a task (``celery.current_task`` set and not eager): anywhere else (the
worker's main process, web, beat, tests) a failure raises at once, as before, so nothing blocks
the worker's event loop or a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = structlog.get_logger(__name__)
T = TypeVar("T")
FIRST_PAUSE, LONGEST_PAUSE = 0.2, 5.0


class DatabaseUnavailable(OperationalError):
    """The database stayed unreachable for the whole wait."""


def is_outage(exc: BaseException) -> bool:
    """A lost or refused connection (Django wraps psycopg2's errors in these two classes)."""
    import psycopg2

    return isinstance(exc, (OperationalError, InterfaceError, psycopg2.OperationalError,
                            psycopg2.InterfaceError))


def in_worker_run() -> bool:
    from celery import current_task

    task = current_task
    return bool(task) and not getattr(task.request, "is_eager", False) and not getattr(
        task.request, "called_directly", True)


def through_outage(call: Callable[[], T], *, what: str, wait: float | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> T:
    """``call()``, tried again through a database outage for up to ``wait`` seconds (default
    ``DB_OUTAGE_WAIT``) when running a task in a worker; elsewhere, or inside a transaction
    (whose work would be lost by a reconnect), once."""
    budget = settings.DB_OUTAGE_WAIT if wait is None else wait
    deadline = clock() + budget
    pause, attempts = FIRST_PAUSE, 0
    while True:
        try:
            result = call()
        except Exception as exc:
            if not is_outage(exc) or connection.in_atomic_block or not in_worker_run():
                raise
            attempts += 1
            connection.close()  # broken: the next attempt opens a new one
            if clock() + pause > deadline:
                log.error("database.unavailable", what=what, attempts=attempts,
                          waited_s=budget, error=str(exc).strip()[:300])
                raise DatabaseUnavailable(
                    f"database unavailable for {budget:g} s while writing {what}: "
                    f"{str(exc).strip()[:200]}") from exc
            if attempts == 1:
                log.warning("database.waiting", what=what, error=str(exc).strip()[:300],
                            wait_s=budget)
            sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)
        else:
            if attempts:
                log.info("database.back", what=what, attempts=attempts)
            return result
