"""Every worker keeps an eye on the scheduler: once a minute (``MONITORING_WATCHDOG_SECONDS``) it
reads the beat heartbeat, and while no beat is alive and enabled periodic jobs exist, it logs an
ERROR saying how many jobs are not being scheduled and for how long; once a beat is back, one INFO
line. Started in the worker's main process by the ``worker_ready`` signal (a daemon thread, so a
slow database never delays a task); a failed check is logged and tried again next time."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.utils import timezone

from project.threads import Repeating

log = structlog.get_logger(__name__)


class BeatWatch:
    def __init__(self, every: float):
        self.loop = Repeating(self.check, every, failure_event="worker.beat_watch_failed")
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


_watch: BeatWatch | None = None


def start(sender=None, **kwargs) -> None:
    global _watch
    if _watch is None and settings.MONITORING_WATCHDOG_SECONDS > 0:
        _watch = BeatWatch(settings.MONITORING_WATCHDOG_SECONDS)
        _watch.loop.start("beat-watch")


def stop(sender=None, **kwargs) -> None:
    if _watch is not None:
        _watch.loop.stopped.set()
