"""Fault injection: two beats and two workers (real processes) on PostgreSQL and a Redis this
test starts on its own free port, while faults are injected one after another:

worker SIGKILL mid-job · pool-process SIGKILL · Redis stopped and restarted · PostgreSQL
connections killed (pg_terminate_backend) · leader beat SIGKILL · leader beat SIGSTOP.

Then, from the ledger, the coupons and the dead letters: every one-second slot was dispatched
exactly once or recorded as missed; every dispatched run succeeded or is a pending dead letter;
the ledger's per-batch counts add up to the coupons actually expired (nothing applied twice,
nothing left, a killed attempt's batches counted); beats and workers reconnected on their own;
the liveness command went red where the fault stopped the work and green after each fault. A raw
pickle message is refused, not run.

`make test` runs the short version (each fault once); `make chaos` repeats the cycle for at least
FAULTS_MINUTES (10) minutes. A summary is printed.
"""

import datetime as dt
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from deadletters.models import DeadLetter
from scheduling.beat import BeatHeartbeat, BeatLease, Dispatch
from scheduling.billing.models import Coupon
from tests.support.processes import (
    ROOT,
    OwnRedis,
    Service,
    beat,
    eventually,
    wait_for_ping,
    worker,
)
from tests.support.steps import postgres_url

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]
MINUTES = float(os.environ.get("FAULTS_MINUTES", "0"))  # 0: one cycle (make test)


class Cluster:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.redis = OwnRedis(tmp_path / "redis")
        self.redis.start()
        self.env = {
            **os.environ,
            "DATABASE_URL": postgres_url(), "CELERY_BROKER_URL": self.redis.url,
            "LOG_FORMAT": "json", "SCHEDULING_BEAT_LEASE_TTL": "5",
            "CELERY_TASK_SOFT_TIME_LIMIT": "15", "CELERY_TASK_TIME_LIMIT": "20",
            "CELERY_VISIBILITY_TIMEOUT": "30", "MONITORING_GRACE": "4",
            "DEADLETTERS_MAX_DELIVERIES": "3",
        }
        self.beats = [beat(self.env, tmp_path, name=f"beat{i}").start() for i in range(2)]
        self.workers = {}
        for i in range(2):
            self.start_worker(f"w{i}")
        self.faults: list[dict] = []

    def start_worker(self, name):
        hostname = f"{name}-{uuid.uuid4().hex[:4]}@{socket.gethostname()}"
        service = worker(self.env, self.tmp, hostname, app="tests.support.probe", concurrency=2)
        service.name = f"worker {name}"
        self.workers[name] = (service.start(), hostname)
        wait_for_ping(self.env, hostname, timeout=90)

    def services(self):
        return [*self.beats, *(s for s, _ in self.workers.values())]

    def liveness(self) -> int:
        done = subprocess.run([sys.executable, "manage.py", "check_scheduler_liveness"],
                              cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        return done.returncode

    def leader(self) -> Service:
        lease = BeatLease.objects.filter(expires_at__gt=timezone.now()).first()
        pid = int(lease.holder.split(":")[1]) if lease and lease.holder else None
        return next((b for b in self.beats if b.proc and b.proc.pid == pid), None)

    def stop(self):
        for service in self.services():
            if service.proc is not None and service.proc.poll() is None:
                os.kill(service.proc.pid, signal.SIGCONT)
            service.stop()
        self.redis.stop()


def fault(cluster: Cluster, name: str, inject, recover, *, expect_red: bool):
    """Inject, watch the liveness command while the fault lasts, recover, wait for green."""
    started = time.monotonic()
    inject()
    red, red_after = False, None
    # Where the fault stops the work, it lasts until the probe has seen it (at most 60 s: the
    # "within a minute" the monitoring promises); elsewhere the probe just looks for a while.
    deadline = time.monotonic() + (60 if expect_red else 4)
    while time.monotonic() < deadline and not red:
        red = cluster.liveness() == 1
        if red:
            red_after = round(time.monotonic() - started, 1)
    recover()
    recovered = time.monotonic()
    eventually(cluster.liveness, lambda code: code == 0, 120, f"green after {name}",
               cluster.services())
    # Reconnected on their own: no beat or worker died of the fault (a dead worker would
    # otherwise only show much later, as a ping that is never answered).
    for service in cluster.services():
        assert service.proc.poll() is None, (
            f"{service.name} exited with {service.proc.returncode} during {name}\n"
            f"{service.log_tail()}")
    cluster.faults.append({"fault": name, "red": red, "red_after_s": red_after,
                           "recovery_s": round(time.monotonic() - recovered, 1),
                           "total_s": round(time.monotonic() - started, 1)})
    if expect_red:
        assert red, f"the liveness command never went red during {name}"


def kill_worker(cluster):
    service, _ = cluster.workers["w0"]
    os.killpg(service.proc.pid, signal.SIGKILL)
    service.stop()


def kill_pool_process(cluster):
    service, _ = cluster.workers["w1"]
    children = subprocess.run(["pgrep", "-P", str(service.proc.pid)], capture_output=True,
                              text=True).stdout.split()
    if children:
        os.kill(int(children[0]), signal.SIGKILL)


def terminate_backends():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def one_cycle(cluster: Cluster):
    fault(cluster, "worker SIGKILL", lambda: kill_worker(cluster),
          lambda: cluster.start_worker("w0"), expect_red=False)
    fault(cluster, "pool process SIGKILL", lambda: kill_pool_process(cluster),
          lambda: None, expect_red=False)
    fault(cluster, "Redis stopped", cluster.redis.stop,
          cluster.redis.start, expect_red=True)
    fault(cluster, "PostgreSQL connections killed", terminate_backends, lambda: None,
          expect_red=False)

    def kill_leader():
        leader = cluster.leader()
        os.kill(leader.proc.pid, signal.SIGKILL)
        leader.stop()
        cluster._killed = leader

    def restart_killed():
        index = cluster.beats.index(cluster._killed)
        cluster.beats[index] = beat(cluster.env, cluster.tmp, name=f"beat{index}").start()

    fault(cluster, "leader beat SIGKILL", kill_leader, restart_killed, expect_red=False)

    def stop_both():
        cluster._stopped = list(cluster.beats)
        for b in cluster._stopped:
            os.kill(b.proc.pid, signal.SIGSTOP)

    def cont_both():
        for b in cluster._stopped:
            os.kill(b.proc.pid, signal.SIGCONT)

    fault(cluster, "leader beat SIGSTOP (both beats hung)", stop_both, cont_both,
          expect_red=True)


def test_nothing_lost_or_doubled_under_faults(tmp_path, capsys):
    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(name="expire-coupons", task="scheduling.expire_coupons",
                                interval=every)
    began = timezone.now()
    # Coupons keep coming due, ten a second, for longer than any run of this test.
    horizon = 60 * (MINUTES + 6)
    Coupon.objects.bulk_create(
        [Coupon(code=f"F{i:07d}", expires_at=began + dt.timedelta(seconds=i / 10))
         for i in range(int(horizon * 10))], batch_size=5000)

    cluster = Cluster(tmp_path)
    cycles = 0
    try:
        eventually(cluster.liveness, lambda code: code == 0, 90, "a healthy start",
                   cluster.services())
        deadline = time.monotonic() + MINUTES * 60
        while True:
            one_cycle(cluster)
            cycles += 1
            if time.monotonic() >= deadline:
                break
        # A raw pickle message is refused, not run.
        refused_id = str(uuid.uuid4())
        publish_pickle(cluster.redis.url, refused_id)
        eventually(lambda: still_queued(cluster.redis.url, refused_id), lambda held: not held,
                   60, "a worker to take and refuse the pickle message", cluster.services())
        assert not [r for r in runs(cluster.redis.url) if r["id"] == refused_id]
        # Reconnected on their own: both beats tick, both workers answer.
        fresh = timezone.now() - dt.timedelta(seconds=5)
        assert BeatHeartbeat.objects.filter(stopped_at=None, last_tick_at__gte=fresh).count() == 2
        for _, hostname in cluster.workers.values():
            wait_for_ping(cluster.env, hostname, timeout=30)
        ended = timezone.now()
    finally:
        for b in cluster.beats:  # stop dispatching first, then let the workers drain
            if b.proc is not None and b.proc.poll() is None:
                os.kill(b.proc.pid, signal.SIGCONT)
            b.stop()
        sent = Dispatch.objects.filter(kind="scheduled")
        eventually(lambda: sent.filter(state__in=["reserved", "sent"]).exclude(
            task_id__in=DeadLetter.objects.values("task_id")).count(), lambda n: n == 0, 90,
            "every dispatched run to finish", cluster.services())
        cluster.stop()

    summary = check_ledger(began, ended)
    summary.update(cycles=cycles, faults=cluster.faults)
    with capsys.disabled():
        print("\nfault-injection summary:", json.dumps(summary, indent=2, default=str))


def check_ledger(began, ended) -> dict:
    rows = list(Dispatch.objects.order_by("slot"))
    scheduled = [r for r in rows if r.kind == "scheduled"]
    # 1. every slot exactly once: sent, or inside one missed range, or skipped.
    covered = []
    for row in rows:
        if row.kind == "missed":
            at = row.missed_from
            while at <= row.slot:
                covered.append(at)
                at += dt.timedelta(seconds=1)
        elif row.kind in ("scheduled", "skipped"):
            covered.append(row.slot)
    expected, at = [], covered[0]
    while at <= covered[-1]:
        expected.append(at)
        at += dt.timedelta(seconds=1)
    twice = sorted(at for at, n in Counter(covered).items() if n > 1)
    lost = sorted(set(expected) - set(covered))
    assert not twice and not lost, (
        f"slots handled twice: {twice[:5]}; lost: {lost[:5]}; rows around them: "
        + "; ".join(f"{r.kind} {r.missed_from}..{r.slot} by {r.dispatched_by} at "
                    f"{r.dispatched_at}" for r in rows
                    if any(abs((r.slot - at).total_seconds()) < 10 for at in twice + lost)))
    # 2. every dispatched run succeeded or is a pending dead letter.
    dead = set(DeadLetter.objects.filter(status="pending").values_list("task_id", flat=True))
    vanished = [r.task_id for r in scheduled if r.state != "succeeded" and r.task_id not in dead]
    assert not vanished, f"runs that neither succeeded nor are dead letters: {vanished[:10]}"
    # 3. counts add up: what the ledger's batches counted is what is expired, once each
    # (the batches of killed attempts included: each batch counts itself as it commits).
    counted = sum(r.rows_done for r in rows)
    expired = Coupon.objects.filter(status="expired").count()
    assert counted == expired, (counted, expired)
    # ... and what the succeeded runs returned never claims more than was done.
    reported = sum((r.result or {}).get("expired", 0) for r in scheduled
                   if r.state == "succeeded")
    assert reported <= expired, (reported, expired)
    overdue = Coupon.objects.filter(status="active",
                                    expires_at__lte=ended - dt.timedelta(seconds=30)).count()
    assert overdue == 0, f"{overdue} coupons past expiry were left active"
    return {
        "slots": len(expected), "dispatched": len(scheduled),
        "missed": sum(r.missed_count or 0 for r in rows if r.kind == "missed"),
        "skipped": sum(1 for r in rows if r.kind == "skipped"),
        "succeeded": sum(1 for r in scheduled if r.state == "succeeded"),
        "dead_letters": len(dead), "coupons_expired": expired,
        "seconds": round((ended - began).total_seconds()),
    }


def publish_pickle(url: str, task_id: str):
    """A protocol-2 message for tests.probe, serialized with pickle, straight onto the queue."""
    import base64

    body = base64.b64encode(pickle.dumps(((), {}, {}))).decode()
    message = {
        "body": body, "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"lang": "py", "task": "tests.probe", "id": task_id, "retries": 0,
                    "root_id": task_id, "parent_id": None, "group": None},
        "properties": {"correlation_id": task_id, "delivery_mode": 2, "delivery_tag": task_id,
                       "body_encoding": "base64", "delivery_info": {"exchange": "",
                                                                    "routing_key": "celery"},
                       "priority": 0},
    }
    redis.Redis.from_url(url).lpush("celery", json.dumps(message))


def still_queued(url: str, task_id: str) -> bool:
    """Whether the message ``task_id`` waits in the queue or is held unacknowledged by a worker
    (kombu's Redis transport keeps delivered, unacked messages in the ``unacked`` hash)."""
    client = redis.Redis.from_url(url)
    held = client.lrange("celery", 0, -1) + list(client.hvals("unacked"))
    return any(task_id.encode() in raw for raw in held)


def runs(url: str) -> list[dict]:
    return [json.loads(raw) for raw in redis.Redis.from_url(url).lrange("probe:runs", 0, -1)]
