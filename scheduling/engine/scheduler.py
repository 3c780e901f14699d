"""The beat scheduler: one active leader, every slot sent once, proof of life on every tick.

Configured as ``CELERY_BEAT_SCHEDULER = "scheduling.beat:LeasedScheduler"``. Each tick:

1. **Schedule version** (``Planner.refresh``). Read ``ScheduleVersion`` (one row, bumped by
   database triggers on any change to the periodic task and schedule tables, however made);
   reload the jobs when it moved.
2. **Lease** (``Lease.hold``). Renew the leader lease by compare-and-set, or take it if it has
   expired. A beat without it stands by: it keeps ticking and reloading, and takes over when the
   lease expires (at once if the leader stopped cleanly and released it).
3. **Heartbeat** (``Heartbeat.beat``). Record that this beat is alive, whether it leads, and the
   version it loaded.
4. **Dispatch** (``Dispatcher``, leader only). For each job whose next slot has come, apply the
   catch-up and overlap policies (``planner.decide``) and send through ``dispatch``, ledger row
   first.

Next slots are computed from the ledger (the last slot handled per job), never from
``last_run_at``, so a new leader or a restarted beat continues exactly where the ledger ends.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket

import structlog
from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections, connection
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from scheduling.engine.consumers import ConsumerWatch
from scheduling.engine.deadman import DeadmanPing
from scheduling.engine.dispatch import Dispatcher
from scheduling.engine.heartbeat import Heartbeat
from scheduling.engine.lease import Lease
from scheduling.engine.planner import Planner

log = structlog.get_logger(__name__)

_tokens: dict[int, str] = {}


def identity() -> str:
    """``host:pid:random``, the same for every scheduler object of one process (celery beat
    builds a throwaway one for its banner), new after a fork or restart."""
    token = _tokens.setdefault(os.getpid(), secrets.token_hex(4))
    return f"{socket.gethostname()}:{os.getpid()}:{token}"


class LeasedScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler with a leader lease, ledger and heartbeat."""

    def __init__(self, *args, clock=None, instance: str | None = None, **kwargs):
        self.clock = clock or timezone.now
        self.instance = instance or identity()
        self.lease = Lease(self.instance, dt.timedelta(seconds=settings.SCHEDULING_BEAT_LEASE_TTL))
        self.heartbeat = Heartbeat(self.instance)
        self.planner = Planner()
        self.closed = False
        super().__init__(*args, **kwargs)
        # (after super(): it needs self.app)
        self.dispatcher = Dispatcher(instance=self.instance, app=self.app)
        self.deadman = DeadmanPing(settings.SCHEDULING_DEADMAN_URL)
        self.consumers = ConsumerWatch(self.app, settings.SCHEDULING_CONSUMER_CHECK_SECONDS)
        self.max_interval = settings.SCHEDULING_BEAT_TICK

    # --- django-celery-beat hooks we replace ---------------------------------------------------
    def setup_schedule(self):
        """Nothing to install: schedules are data (seed_schedules), CELERY_BEAT_SCHEDULE is empty
        (a system check enforces it) and the result cleanup job is one of the seeded defaults."""

    @property
    def schedule(self):
        return {name: job.model for name, job in self.planner.jobs.items()}

    def sync(self):
        """Nothing is kept in memory that the database does not already have (the ledger)."""

    @property
    def info(self):
        return (f"    . instance -> {self.instance}\n"
                f"    . lease ttl -> {self.lease.ttl.total_seconds():.0f}s")

    @property
    def leading(self) -> bool:
        return self.lease.held

    # --- the tick ------------------------------------------------------------------------------
    def tick(self, *args, **kwargs) -> float:
        now = self.clock()
        idle = float(self.max_interval)
        try:
            if not connection.in_atomic_block:  # (tests drive ticks inside a transaction)
                close_old_connections()
            self.planner.refresh()  # 1. schedule version
            was_leading = self.leading
            leading = self.lease.hold(now)  # 2. lease
            self.heartbeat.beat(now, leading=leading, version=self.planner.loaded_version)  # 3.
            if not leading:
                return idle
            if not was_leading:
                self.dispatcher.leading_since = now
            if not was_leading or self.planner.stale:
                self.planner.plan()  # continue from the ledger, not from what a standby knew
            self.dispatch(now)  # 4. dispatch
        except (DatabaseError, InterfaceError) as exc:
            # Never dispatch on a lease we could not prove; retry on the next tick. The heartbeat
            # stops moving meanwhile, which is what the liveness check reports.
            self.lease.drop()
            log.error("beat.database_error", error=str(exc), instance=self.instance)
            return idle
        except Exception as exc:
            # Broker down or a message that cannot be built: the ledger rows of what was not
            # sent were removed; plan again from the ledger so those slots are retried (within
            # the catch-up window) once sending works again. Beat itself keeps running.
            self.planner.stale = True
            self.drop_connection()
            log.error("beat.send_failed", error=repr(exc), instance=self.instance)
            return idle
        return self.planner.seconds_to_next(now, idle)

    def dispatch(self, now: dt.datetime) -> None:
        """The leader's step 4: re-send what a dead beat reserved, send what is due; then (in
        threads, at most once a minute) ping the dead-man's switch and check the consumers."""
        self.dispatcher.resend_if_due(now, self.producer)
        self.dispatcher.send_due(self.planner, now, self.producer)
        self.deadman.maybe_ping(now)
        self.consumers.maybe_check(now, [job.model for job in self.planner.jobs.values()])

    def drop_connection(self) -> None:
        """Forget the broker connection and producer; the next send opens fresh ones."""
        self.__dict__.pop("producer", None)
        broker = self.__dict__.pop("connection", None)
        if broker is not None:
            try:
                broker.release()
            except Exception:  # already broken: nothing to release
                pass

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                now = self.clock()
                self.lease.release(now)
                self.heartbeat.stop(now)
                log.info("beat.released_lease", instance=self.instance)
            except (DatabaseError, InterfaceError) as exc:
                log.error("beat.release_failed", error=str(exc), instance=self.instance)
        super().close()
