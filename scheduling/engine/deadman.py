"""The dead-man's switch: the leader pings ``SCHEDULING_DEADMAN_URL`` every minute, so an outside
monitor notices when no beat leads any more (or this whole system is gone)."""

from __future__ import annotations

import datetime as dt
import threading
import urllib.request

import structlog

log = structlog.get_logger(__name__)

EVERY = dt.timedelta(seconds=60)


class DeadmanPing:
    def __init__(self, url: str | None):
        self.url = url
        self.pinged_at: dt.datetime | None = None

    def due(self, now: dt.datetime) -> bool:
        return bool(self.url) and (self.pinged_at is None or now - self.pinged_at >= EVERY)

    def maybe_ping(self, now: dt.datetime) -> threading.Thread | None:
        """Ping if a minute has passed, in a thread (a slow monitor never delays a dispatch)."""
        if not self.due(now):
            return None
        self.pinged_at = now
        thread = threading.Thread(target=self._ping, name="deadman-ping", daemon=True)
        thread.start()
        return thread

    def _ping(self) -> None:
        try:
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read(1024)
        except Exception as exc:
            log.warning("beat.deadman_failed", error=repr(exc))
