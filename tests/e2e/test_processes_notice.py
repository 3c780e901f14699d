"""The processes that run notice the one that does not: a worker started with no beat logs an
ERROR naming how many jobs are not being scheduled, and an INFO once a beat is back; the leading
beat logs an ERROR for a queue that no live worker consumes, naming its jobs."""

import json
import socket
import uuid

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.support.processes import beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def events(service, name: str) -> list[dict]:
    found = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == name:
            found.append(record)
    return found


def test_a_worker_without_beat_and_a_beat_without_consumer_say_so(tmp_path):
    every, _ = IntervalSchedule.objects.get_or_create(every=5, period="seconds")
    PeriodicTask.objects.create(name="expire", task="scheduling.expire_coupons", interval=every)
    PeriodicTask.objects.create(name="monthly-report", task="scheduling.expire_coupons",
                                interval=every, queue="reports")
    env = InProcess(tmp_path).env | {"MONITORING_WATCHDOG_SECONDS": "2",
                                     "SCHEDULING_CONSUMER_CHECK_SECONDS": "2",
                                     "SCHEDULING_BEAT_TICK": "1"}
    hostname = f"notice-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    services = [worker(env, tmp_path, hostname).start()]
    try:
        wait_for_ping(env, hostname)
        (no_beat, *_) = eventually(lambda: events(services[0], "worker.no_beat"), bool, 60,
                                   "the worker's no-beat ERROR", services)
        assert no_beat["level"] == "error"
        assert no_beat["jobs"] == PeriodicTask.objects.filter(enabled=True).count()
        assert "no beat is leading" in no_beat["problem"]

        services.append(beat(env, tmp_path).start())
        eventually(lambda: events(services[0], "worker.beat_back"), bool, 60,
                   "the worker to see the beat back", services)
        (unconsumed, *_) = eventually(
            lambda: events(services[1], "beat.queue_without_consumer"), bool, 60,
            "the beat's ERROR for the queue nobody consumes", services)
        assert unconsumed["level"] == "error"
        assert (unconsumed["queue"], unconsumed["jobs"]) == ("reports", ["monthly-report"])
        assert not [e for e in events(services[1], "beat.queue_without_consumer")
                    if e["queue"] == "celery"]  # the consumed queue is not reported
    finally:
        for service in services:
            service.stop()
