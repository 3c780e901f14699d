"""Every worker keeps an eye on the scheduler: once a minute (``MONITORING_WATCHDOG_SECONDS``) it
reads the beat heartbeat, and while no beat is alive and enabled periodic jobs exist, it logs an
ERROR saying how many jobs are not being scheduled and for how long; once a beat is back, one INFO
line. Started in the worker's main process by the ``worker_ready`` signal (a daemon thread, so a
slow database never delays a task); a failed check is logged and tried again next time."""

from __future__ import annotations

import threading

import structlog
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

log = structlog.get_logger(__name__)


class BeatWatch:
    def __init__(self, every: float):
        self.every = every
        self.stopped = threading.Event()
        self.missing = False

    def check(self) -> dict | None:
        """One look: the ERROR's fields while no beat is alive, else None (and log recovery)."""
        from monitoring.status import beat_state, unscheduled_jobs

        state = beat_state(timezone.now())
        jobs = unscheduled_jobs(state)
        if not jobs:
            if self.missing:
                log.info("worker.beat_back", leader=state.leader)
            self.missing = False
            return None
        self.missing = True
        fields = {"jobs": jobs, "heartbeat_age_s": state.heartbeat_age,
                  "problem": state.problems[0]}
        log.error("worker.no_beat", **fields,
                  hint="start `celery -A project beat`: these jobs are not being scheduled")
        return fields

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.check()
            except Exception as exc:  # the database is down: the next look will tell
                log.warning("worker.beat_watch_failed", error=repr(exc))
            finally:
                close_old_connections()


_watch: BeatWatch | None = None


def start(sender=None, **kwargs) -> None:
    global _watch
    if _watch is None and settings.MONITORING_WATCHDOG_SECONDS > 0:
        _watch = BeatWatch(settings.MONITORING_WATCHDOG_SECONDS)
        threading.Thread(target=_watch.run, name="beat-watch", daemon=True).start()


def stop(sender=None, **kwargs) -> None:
    if _watch is not None:
        _watch.stopped.set()
