"""Each way of silently not doing the work, with a real beat and real workers: the job turns red
with the named cause, and green again when fixed, while a frequent healthy job stays green.

- a queue nobody consumes, a task no worker has registered, an exchange with no bound queue:
  red before any run is late (the worker registry and the job's route);
- a message that expired before a worker took it (its worker is busy): red once one expires;
- a worker SIGKILLed with a run in flight: the run is marked lost, the job red until a run
  succeeds.

The times it took are printed (``-s``) for the record.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from monitoring.models import JobMonitor
from monitoring.status import job_statuses
from scheduling.beat import Dispatch, JobPolicy
from tests.support.processes import ROOT, beat, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
GRACE, STALE = 5, 3
GREEN = {"ok", "running"}


def every(seconds):
    return IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")[0]


def job(name, task, seconds, **fields):
    model = PeriodicTask.objects.create(name=name, task=task, interval=every(seconds), **fields)
    JobMonitor.objects.create(periodic_task=model, grace=GRACE, max_runtime=60)
    return model


class Watch:
    """Polls every job's status in this process (the one derivation) and checks on every poll
    that the healthy job, once it has succeeded, stays green."""

    def __init__(self, services):
        self.services, self.healthy_seen = services, False

    def statuses(self) -> dict:
        found = {s.name: s for s in job_statuses(timezone.now(), outcomes=False)}
        healthy = found["healthy"]
        if healthy.status == "ok":
            self.healthy_seen = True
        if self.healthy_seen:
            assert healthy.status in GREEN, (healthy.status, healthy.reason)
        for service in self.services:
            assert service.proc is None or service.proc.poll() is None, service.log_tail()
        return found

    def until(self, name, check, timeout, what) -> tuple[float, object]:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status = self.statuses()[name]
            if check(status):
                return time.monotonic() - started, status
            time.sleep(0.2)
        logs = "\n".join(s.log_tail(20) for s in self.services if s.proc is not None)
        raise AssertionError(f"{name}: no {what} in {timeout} s; last {status}\n{logs}")


def red_with(cause):
    return lambda s: s.status not in GREEN and cause in s.reason


def green(s):
    return s.status == "ok"


def test_each_silent_failure_turns_its_job_red_with_the_cause_and_green_when_fixed(tmp_path):
    PeriodicTask.objects.all().delete()
    held = tmp_path / "hold"
    held.touch()
    env = InProcess(tmp_path).env | {
        "SCHEDULING_BEAT_TICK": "1", "SCHEDULING_WORKER_HEARTBEAT": "1",
        "SCHEDULING_WORKER_STALE": str(STALE),
    }
    host = socket.gethostname()
    names = {role: f"{role}-{uuid.uuid4().hex[:6]}@{host}"
             for role in ("main", "busy", "victim", "replacement", "reports")}
    app = "tests.support.probe"
    services = [
        worker(env, tmp_path, names["main"], app=app, concurrency=2),
        worker(env, tmp_path, names["busy"], app=app, queues="busy"),
        worker(env, tmp_path, names["victim"], app=app, queues="longq"),
    ]
    for service in services:
        service.start()
    watch, times = Watch(services), {}
    try:
        for role in ("main", "busy", "victim"):
            wait_for_ping(env, names[role])
        job("healthy", "tests.probe", 1)
        job("reports", "tests.probe", 2, queue="reports")
        ghost = job("ghost", "tests.no_such_task", 2)
        unrouted = job("unrouted", "tests.probe", 2, exchange="nowhere", routing_key="nowhere")
        expiring = job("expiring", "tests.slow", 1, queue="busy", expire_seconds=1,
                       kwargs=json.dumps({"seconds": 3, "marker": str(tmp_path / "slow")}))
        JobPolicy.objects.create(periodic_task=expiring, overlap=JobPolicy.Overlap.ALLOW)
        longrun = job("longrun", "tests.hold", 3, queue="longq",
                      kwargs=json.dumps({"path": str(held)}))
        services.append(beat(env, tmp_path).start())
        created = time.monotonic()

        # Red before any run is late: the registry says nobody can take these messages.
        for name, cause in [
            ("reports", "no live worker consumes queue 'reports': start a worker with -Q reports"),
            ("ghost", "task 'tests.no_such_task' is not registered on any live worker"),
            ("unrouted", "message is not routed to any queue"),
        ]:
            took, status = watch.until(name, red_with(cause), 5, cause)
            assert status.status == "queued"
            times[f"{name} red"] = time.monotonic() - created

        # The busy worker's messages wait behind a 3 s run and expire after 1 s: red when the
        # first one is dropped (grace + one period + the 3 s run, + 10 s for beat's start-up).
        took, status = watch.until("expiring", red_with("message expired before a worker"),
                                   GRACE + 1 + 3 + 10, "expired message")
        times["expiring red"] = time.monotonic() - created
        assert Dispatch.objects.filter(periodic_task=expiring, state="expired").exists()

        # A run in flight on a worker that is SIGKILLed: lost once the worker is stale.
        started = Path(f"{held}.started")
        watch.until("longrun", lambda _: started.exists(), 20, "the held run started")
        os.killpg(services[2].proc.pid, signal.SIGKILL)
        services[2].stop()
        killed = time.monotonic()
        services.append(worker(env, tmp_path, names["replacement"], app=app,
                               queues="longq").start())
        # Stale after STALE s, marked by beat's check every 5 s; a replacement worker starts.
        took, status = watch.until("longrun", red_with("is lost: the worker"), 40, "lost run")
        times["longrun lost after SIGKILL"] = time.monotonic() - killed
        assert f"{names['victim']} that ran it is gone" in status.reason
        assert status.status == "lost"
        lost = Dispatch.objects.get(periodic_task=longrun, state="lost")
        assert "silent for more than" in lost.error

        # The same truth from the command: exit 1, each cause named.
        done = subprocess.run([sys.executable, "manage.py", "check_scheduler_liveness", "--json"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        reported = {j["name"]: j for j in json.loads(done.stdout)["jobs"]}
        assert reported["healthy"]["status"] in GREEN
        for name in ("reports", "ghost", "unrouted", "longrun"):
            assert reported[name]["status"] not in GREEN, reported[name]

        # Fixes: a worker on the queue, the rows corrected, the held run released.
        fixed = time.monotonic()
        services.append(worker(env, tmp_path, names["reports"], app=app,
                               queues="reports").start())
        PeriodicTask.objects.filter(pk=ghost.pk).update(task="tests.probe")
        PeriodicTask.objects.filter(pk=unrouted.pk).update(exchange=None, routing_key=None)
        PeriodicTask.objects.filter(pk=expiring.pk).update(
            expire_seconds=None, kwargs=json.dumps({"seconds": 0.1, "marker": str(tmp_path / "s")}))
        held.unlink()
        for name in ("ghost", "unrouted", "expiring", "longrun", "reports"):
            took, status = watch.until(name, green, 40, "green")
            times[f"{name} green after fix"] = time.monotonic() - fixed
        assert watch.healthy_seen
    finally:
        for service in services:
            service.stop()
        print("\nseconds:", json.dumps({k: round(v, 1) for k, v in times.items()}))
