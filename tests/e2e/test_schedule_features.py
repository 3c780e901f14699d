"""django-celery-beat's schedule features with a real beat and worker: an expired task is disabled
by beat (audited), a clocked one-off saved after its time runs once at once and is disabled, an
interval job with start_time runs first at start_time, and a solar job runs at its event (a
longitude is chosen where sunrise is a few seconds away)."""

import datetime as dt
import socket
import uuid

import pytest
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from scheduling.beat import ScheduleChange, next_slot
from tests.support import probe
from tests.support.processes import beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def sunrise_soon(seconds: float) -> tuple[SolarSchedule, dt.datetime]:
    """A sunrise schedule on the equator whose next event is about ``seconds`` from now: the
    event moves 240 s earlier per degree east, so a few Newton steps on the longitude find it
    (each step looks at the first event after an hour ago, so a sunrise just passed counts as
    negative rather than as tomorrow's)."""
    target, longitude = timezone.now() + dt.timedelta(seconds=seconds), 0.0
    for _ in range(12):
        solar = SolarSchedule(event="sunrise", latitude=0, longitude=round(longitude, 6))
        at = next_slot(solar.schedule, timezone.now() - dt.timedelta(hours=1))
        error = ((at - target).total_seconds() + 43200) % 86400 - 43200
        if abs(error) < 1:
            break
        longitude = (longitude + error / 240 + 180) % 360 - 180
    solar.save()
    return solar, next_slot(solar.schedule, timezone.now())


def test_expires_clocked_start_time_and_solar_behave_as_django_celery_beat(tmp_path):
    PeriodicTask.objects.all().delete()
    env = InProcess(tmp_path).env | {"SCHEDULING_BEAT_TICK": "1"}
    now = timezone.now()
    second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    minute, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    expiring = PeriodicTask.objects.create(name="expiring", task="tests.probe", interval=second,
                                           expires=now + dt.timedelta(seconds=8))
    past = ClockedSchedule.objects.create(clocked_time=now - dt.timedelta(hours=1))
    once = PeriodicTask.objects.create(name="clocked-past", task="tests.probe", clocked=past,
                                       one_off=True)
    start = (now + dt.timedelta(seconds=10)).replace(microsecond=0)
    starting = PeriodicTask.objects.create(name="from-start", task="tests.probe",
                                           interval=minute, start_time=start)
    solar, sunrise = sunrise_soon(14)
    PeriodicTask.objects.create(name="sunrise", task="tests.probe", solar=solar)
    hostname = f"features-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    services = [worker(env, tmp_path, hostname, app="tests.support.probe").start()]
    try:
        wait_for_ping(env, hostname)
        services.append(beat(env, tmp_path).start())

        def runs(name):
            return [r for r in probe.runs(env["CELERY_BROKER_URL"]) if r["name"] == name]

        for name in ("clocked-past", "from-start", "sunrise"):
            eventually(lambda name=name: runs(name), bool, 40, f"a run of {name}", services)
        eventually(lambda: PeriodicTask.objects.get(pk=expiring.pk).enabled, lambda e: not e,
                   30, "beat to disable the expired task", services)

        # Clocked, saved after its time: once, at once, then disabled (one_off).
        assert [r["slot"] for r in runs("clocked-past")] == [past.clocked_time.isoformat()]
        assert not PeriodicTask.objects.get(pk=once.pk).enabled
        # start_time: the first run is at start_time.
        first = runs("from-start")[0]
        assert first["slot"] == start.isoformat()
        assert first["at"] - start.timestamp() < 2
        # Solar: at the sunrise the schedule computes.
        slot = dt.datetime.fromisoformat(runs("sunrise")[0]["slot"])
        assert abs((slot - sunrise).total_seconds()) < 1, (slot, sunrise)
        # Expired: disabled by beat, audited as the scheduler's doing; its runs were before.
        change = ScheduleChange.objects.get(periodic_task=expiring)
        assert change.changed_by is None and "disabled by the scheduler" in change.reason
        assert runs("expiring")
        assert all(r["slot"] < expiring.expires.isoformat() for r in runs("expiring"))
        assert len(runs("clocked-past")) == 1 and len(runs("from-start")) == 1
        assert PeriodicTask.objects.get(pk=starting.pk).enabled
    finally:
        for service in services:
            service.stop()
