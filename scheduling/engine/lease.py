"""The leader lease: one row, taken and renewed by compare-and-set; only its holder dispatches.

``UPDATE … WHERE holder = me`` renews, ``… WHERE expires_at < now`` (or nobody holds it) takes
it. A beat restarted in place need not wait out the TTL: a holder that was a process on this host
and no longer runs is taken over at once. A clean stop releases the lease.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

import structlog
from django.db.models import Q

from scheduling.engine.models import BeatHeartbeat, BeatLease

log = structlog.get_logger(__name__)

LEASE_NAME = "default"


def pid_alive(pid: int) -> bool | None:
    """True / False for a process of this host; None when it runs as someone else's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return None
    return True


def dead_local_holder(holder: str | None, *, me: str, hostname: str, pid: int,
                      alive=pid_alive) -> str | None:
    """``holder`` if it names a process on ``hostname`` that no longer runs, else None.

    Instances read ``host:pid:token``. Our own pid with another token is a previous process
    (a container restarted with the same pid, pid 1 typically)."""
    if not holder or holder == me:
        return None
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != hostname or not pid_text.isdigit():
        return None
    if int(pid_text) == pid:
        return holder
    return holder if alive(int(pid_text)) is False else None


class Lease:
    """The lease as seen by one beat ``instance``."""

    def __init__(self, instance: str, ttl: dt.timedelta, *, alive=pid_alive):
        self.instance, self.ttl, self.alive = instance, ttl, alive
        self.held = False

    def hold(self, now: dt.datetime) -> bool:
        """Renew or take the lease; whether this beat holds it until ``now + ttl``."""
        was_held, self.held = self.held, self._take(now)
        if self.held and not was_held:
            log.info("beat.leading", instance=self.instance)
        elif was_held and not self.held:
            log.warning("beat.lost_lease", instance=self.instance)
        return self.held

    def drop(self) -> None:
        """Forget leadership without touching the row (a database error: nothing proven)."""
        self.held = False

    def _take(self, now: dt.datetime) -> bool:
        until = now + self.ttl
        leases = BeatLease.objects.filter(pk=LEASE_NAME)
        if leases.filter(holder=self.instance).update(renewed_at=now, expires_at=until):
            return True
        take = dict(holder=self.instance, acquired_at=now, renewed_at=now, expires_at=until)
        free = Q(holder="") | Q(expires_at__isnull=True) | Q(expires_at__lt=now)
        if leases.filter(free).update(**take):
            return True
        dead = dead_local_holder(
            leases.values_list("holder", flat=True).first(), me=self.instance,
            hostname=socket.gethostname(), pid=os.getpid(), alive=self.alive,
        )
        if dead and leases.filter(holder=dead).update(**take):
            BeatHeartbeat.objects.filter(instance=dead).update(is_leader=False, stopped_at=now)
            log.warning("beat.took_lease_from_dead_process", dead=dead, instance=self.instance)
            return True
        if not leases.exists():
            BeatLease.objects.bulk_create([BeatLease(name=LEASE_NAME)], ignore_conflicts=True)
            return self._take(now)
        return False

    def release(self, now: dt.datetime) -> None:
        BeatLease.objects.filter(pk=LEASE_NAME, holder=self.instance).update(
            holder="", expires_at=now)
        self.held = False


def current_lease() -> BeatLease | None:
    return BeatLease.objects.filter(pk=LEASE_NAME).first()
