"""The liveness command and /health/scheduler against a real beat and worker: SIGKILL or SIGSTOP
the beat and both go red within three ticks; restart it and they are green within three ticks of
its first heartbeat (its own start-up, seconds on a loaded machine, is not the monitoring's)."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from django.test import Client, override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduling.beat import BeatHeartbeat
from tests.support.processes import ROOT, beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
TICK = 1


def liveness(env) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "manage.py", "check_scheduler_liveness"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=30,
    )
    return done.returncode, done.stdout + done.stderr, started


def first_red(env, since: float, timeout: float = 60):
    """(seconds from ``since`` to the start of the first red run, its output, the duration of the
    run before it): the command is polled, so red is seen up to one run late."""
    deadline, previous = time.monotonic() + timeout, 0.0
    while time.monotonic() < deadline:
        code, out, started = liveness(env)
        if code == 1:
            return started - since, out, previous
        assert code == 0, out
        previous = time.monotonic() - started
    raise AssertionError("the liveness command never went red")


def first_green(env, since: float, timeout: float = 60):
    deadline, out = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        code, out, _ = liveness(env)
        if code == 0:
            return time.monotonic() - since, out
    raise AssertionError(f"the liveness command never went green: {out}")


def first_heartbeat(services, timeout: float = 60) -> float:
    """When a beat other than those already recorded wrote its first heartbeat (monotonic)."""
    known = set(BeatHeartbeat.objects.values_list("instance", flat=True))
    eventually(lambda: BeatHeartbeat.objects.exclude(instance__in=known).exists(), bool,
               timeout, "a heartbeat of the restarted beat", services)
    return time.monotonic()


@override_settings(MONITORING_HEALTH_CACHE=0)
def test_beat_killed_or_hung_turns_everything_red_and_restart_green(tmp_path):
    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(name="probe-1s", task="tests.probe", interval=every)
    env = InProcess(tmp_path).env | {"SCHEDULING_BEAT_TICK": str(TICK)}
    hostname = f"live-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    services = [worker(env, tmp_path, hostname, app="tests.support.probe").start()]
    web = Client()
    try:
        wait_for_ping(env, hostname)
        services.append(beat(env, tmp_path).start())
        first_green(env, time.monotonic())
        assert web.get("/health/scheduler").status_code == 200

        # SIGKILL: red within three ticks (the command's own start-up is not counted).
        os.kill(services[1].proc.pid, signal.SIGKILL)
        services[1].stop()
        took, out, poll = first_red(env, time.monotonic())
        assert took <= 3 * TICK + poll, (took, poll, out)  # three ticks, seen by the next run
        assert "no beat is leading" in out
        assert web.get("/health/scheduler").status_code == 503

        # Restart: green within three ticks of its first heartbeat, seen by the next run.
        restarted = time.monotonic()
        services[1] = beat(env, tmp_path).start()
        up = first_heartbeat(services)
        took, out = first_green(env, up)
        assert took <= 3 * TICK + 2 * poll, (took, poll, out)  # a red run may straddle it
        assert up - restarted <= 60, up - restarted  # start-up itself: seconds, bounded
        assert web.get("/health/scheduler").status_code == 200

        # SIGSTOP (hung, still a process): red the same way; SIGCONT: green again.
        eventually(lambda: liveness(env)[0], lambda c: c == 0, 20, "green before the stop",
                   services)
        os.kill(services[1].proc.pid, signal.SIGSTOP)
        took, out, poll = first_red(env, time.monotonic())
        assert took <= 3 * TICK + poll, (took, poll, out)
        assert web.get("/health/scheduler").status_code == 503
        os.kill(services[1].proc.pid, signal.SIGCONT)
        took, out = first_green(env, time.monotonic())
        assert took <= 3 * TICK + 2 * poll, (took, poll, out)
    finally:
        for service in services:
            if service.proc is not None and service.proc.poll() is None:
                os.kill(service.proc.pid, signal.SIGCONT)
            service.stop()
