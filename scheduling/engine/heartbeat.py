"""Proof of life: one ``BeatHeartbeat`` row per beat process, touched on every tick."""

from __future__ import annotations

import datetime as dt
import os
import socket

from scheduling.engine.models import BeatHeartbeat

#: Heartbeat rows of beats that stopped ticking this long ago are deleted.
RETENTION = dt.timedelta(days=7)


class Heartbeat:
    def __init__(self, instance: str):
        self.instance = instance
        self.created = False

    def beat(self, now: dt.datetime, *, leading: bool, version: int | None) -> None:
        """Record that this beat ticked at ``now``, whether it leads and what it loaded."""
        fields = dict(last_tick_at=now, is_leader=leading, schedule_version=version)
        if self.created:
            BeatHeartbeat.objects.filter(instance=self.instance).update(**fields)
            return
        BeatHeartbeat.objects.filter(last_tick_at__lt=now - RETENTION).delete()
        BeatHeartbeat.objects.update_or_create(
            instance=self.instance,
            defaults=dict(fields, hostname=socket.gethostname(), pid=os.getpid(), started_at=now),
        )
        self.created = True

    def stop(self, now: dt.datetime) -> None:
        BeatHeartbeat.objects.filter(instance=self.instance).update(
            is_leader=False, stopped_at=now)
