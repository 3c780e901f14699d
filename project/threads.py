"""A worker-side daemon thread that does one small database chore every few seconds (the beat
watch, the worker registry's heartbeat): a failure is logged and tried again next time, and the
thread's database connection is closed after each round so a broken one is never reused."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from django.db import close_old_connections

log = structlog.get_logger(__name__)


class Repeating:
    """Call ``chore`` every ``every`` seconds until ``stopped`` is set."""

    def __init__(self, chore: Callable[[], object], every: float, *, failure_event: str):
        self.chore, self.every, self.failure_event = chore, every, failure_event
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.chore()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning(self.failure_event, error=repr(exc))
            finally:
                close_old_connections()

    def start(self, name: str) -> Repeating:
        threading.Thread(target=self.run, name=name, daemon=True).start()
        return self
