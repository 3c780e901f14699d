"""Bad schedule rows (as scripts write them) beside a healthy 1 s job, with a real beat and worker:
the healthy job keeps its slot-to-start under 2 s, each bad row is failed for its own slots with
its own reason (logged once, not once per tick), and a corrected row turns green."""

import json
import socket
import time
import uuid

import pytest
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from monitoring.models import JobMonitor
from monitoring.status import job_statuses
from scheduling.beat import Dispatch
from tests.support import probe
from tests.support.processes import beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
FLAG = "scheduling.flag_expiring_cards"


def test_bad_rows_harm_only_themselves_with_a_real_beat(tmp_path):
    PeriodicTask.objects.all().delete()
    env = InProcess(tmp_path).env | {"SCHEDULING_BEAT_TICK": "1"}
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    zero = IntervalSchedule.objects.create(every=0, period="seconds")
    PeriodicTask.objects.create(name="healthy", task="tests.probe", interval=every)
    bad = {
        "list-kwargs": dict(task=FLAG, interval=every, kwargs="[45]"),
        "unknown-keyword": dict(task=FLAG, interval=every, kwargs='{"within_dayz": 5}'),
        "args-object": dict(task="tests.probe", interval=every, args='{"a": 1}'),
        "list-headers": dict(task="tests.probe", interval=every, headers="[1]"),
        "zero-interval": dict(task="tests.probe", interval=zero),
    }
    models = {name: PeriodicTask.objects.create(name=name, **fields)
              for name, fields in bad.items()}
    for model in models.values():
        JobMonitor.objects.create(periodic_task=model, grace=3)
    hostname = f"bad-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    services = [worker(env, tmp_path, hostname, app="tests.support.probe").start()]
    try:
        wait_for_ping(env, hostname)
        services.append(beat(env, tmp_path).start())
        healthy = lambda: [r for r in probe.runs(env["CELERY_BROKER_URL"])  # noqa: E731
                           if r["name"] == "healthy"]
        eventually(lambda: len(healthy()), lambda n: n >= 8, 60, "eight healthy runs",
                   services)

        lateness = [r["at"] - timezone.datetime.fromisoformat(r["slot"]).timestamp()
                    for r in healthy()]
        assert max(lateness) < 2, lateness  # slot to start, while the bad rows are there
        statuses = {s.name: s for s in job_statuses(timezone.now(), outcomes=False)}
        assert statuses["zero-interval"].reason.startswith("invalid schedule:")
        for name in ("list-kwargs", "unknown-keyword", "args-object", "list-headers"):
            assert statuses[name].status == "invalid", statuses[name]
            assert statuses[name].reason.startswith("cannot send: "), statuses[name]
            failed = Dispatch.objects.filter(periodic_task=models[name], state="failed")
            assert failed.count() >= 3 and "cannot send:" in failed.first().error, name
        assert "within_dayz" in statuses["unknown-keyword"].reason
        beat_log = services[1].log_path.read_text()
        logged = [json.loads(line)["job"] for line in beat_log.splitlines()
                  if '"beat.cannot_send"' in line]
        assert sorted(logged) == sorted(["list-kwargs", "unknown-keyword", "args-object",
                                         "list-headers"])  # once each, not once per tick
        assert '"beat.send_failed"' not in beat_log

        # The corrected row is used from the next slot: a run succeeds and it is green.
        fixed = time.monotonic()
        PeriodicTask.objects.filter(name="unknown-keyword").update(kwargs='{"within_days": 5}')
        eventually(lambda: {s.name: s for s in job_statuses(timezone.now(), outcomes=False)}[
            "unknown-keyword"].status, lambda s: s == "ok", 30, "the fixed row green", services)
        print(f"\nhealthy slot-to-start max {max(lateness):.2f} s over {len(lateness)} runs; "
              f"fixed row green after {time.monotonic() - fixed:.1f} s")
    finally:
        for service in services:
            service.stop()
