"""Real `celery beat` processes against PostgreSQL and Redis: two beats never send a slot twice,
a standby takes over when the leader is killed (within TTL + one tick) or stopped (at once), and a
beat killed right after a dispatch and restarted does not send that slot again.

Runs are counted by effect: the probe task (tests/support/probe.py) appends each execution to Redis.
"""

import datetime as dt
import os
import signal
import socket
import uuid
from collections import Counter

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduling.beat import BeatHeartbeat, BeatLease, Dispatch
from tests.support import probe
from tests.support.processes import beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
TTL = 5
TICK = 1
STOCK = "django_celery_beat.schedulers:DatabaseScheduler"


@pytest.fixture
def env(tmp_path):
    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(name="probe-1s", task="tests.probe", interval=every)
    return InProcess(tmp_path).env | {
        "SCHEDULING_BEAT_LEASE_TTL": str(TTL),
        "SCHEDULING_BEAT_TICK": str(TICK),
    }


@pytest.fixture
def services(env, tmp_path):
    started = []
    hostname = f"probe-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    started.append(
        worker(env, tmp_path, hostname, app="tests.support.probe", concurrency=4).start())
    wait_for_ping(env, hostname)
    yield started
    for service in started:
        service.stop()


def probe_runs(env):
    return [r for r in probe.runs(env["CELERY_BROKER_URL"]) if r["name"] == "probe-1s"]


def leader_pid() -> int | None:
    lease = BeatLease.objects.filter(expires_at__gt=dt.datetime.now(dt.UTC)).first()
    return int(lease.holder.split(":")[1]) if lease and lease.holder else None


def start_beats(env, tmp_path, services, count, *args):
    beats = [beat(env, tmp_path, *args, name=f"beat{i}").start() for i in range(count)]
    services.extend(beats)
    return beats


def assert_each_slot_ran_once(env, services):
    def settled():
        dispatched = set(Dispatch.objects.filter(kind="scheduled").values_list("task_id",
                                                                                flat=True))
        return dispatched, {r["id"] for r in probe_runs(env)}

    eventually(settled, lambda s: s[0] <= s[1], 30, "every dispatched slot to run", services)
    runs = probe_runs(env)
    repeated = {slot: n for slot, n in Counter(r["slot"] for r in runs).items() if n > 1}
    assert not repeated, f"slots run more than once: {repeated}"
    return runs


def observe(env, services, seconds):
    """Wait (on the probe's own clock) until the job's runs span ``seconds``."""
    def span():
        at = [r["at"] for r in probe_runs(env)]
        return max(at) - min(at) if at else 0.0

    return eventually(span, lambda s: s >= seconds, seconds + 60, f"{seconds} s of runs",
                      services)


@pytest.mark.parametrize(("scheduler", "seconds"), [("ours", 60), ("stock", 20)])
def test_two_beats_side_by_side(env, services, tmp_path, scheduler, seconds):
    args = () if scheduler == "ours" else ("--scheduler", STOCK)
    beats = start_beats(env, tmp_path, services, 2, *args)
    observe(env, services, seconds)
    for b in beats:
        assert b.stop() == 0, b.log_tail()
    if scheduler == "stock":
        # The control: without the lease both beats send every second. If this ever fails to
        # see doubles, the comparison above proves nothing.
        at = sorted(r["at"] for r in probe_runs(env))
        within = [t for t in at if t <= at[0] + seconds]
        assert len(within) > 1.5 * seconds, f"stock beats ran {len(within)} times in {seconds}s"
        return
    runs = assert_each_slot_ran_once(env, services)
    slots = sorted(dt.datetime.fromisoformat(r["slot"]) for r in runs)
    assert len(slots) >= seconds - 5
    steps = Counter((b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False))
    assert set(steps) == {1.0}, f"slots not one second apart: {steps}"
    scheduled = Dispatch.objects.filter(kind="scheduled")
    assert set(scheduled.values_list("state", flat=True)) == {"succeeded"}  # worker-side record
    # Only the slots between the job's creation and the first tick may be recorded as missed.
    others = list(Dispatch.objects.exclude(kind="scheduled").values_list("kind", "slot"))
    assert all(kind == "missed" and slot < min(slots) for kind, slot in others), others
    leaders = BeatHeartbeat.objects.filter(is_leader=True).count()
    assert leaders == 0  # both stopped cleanly and gave the lease back


def test_standby_takes_over_after_sigkill_and_at_once_after_sigterm(env, services, tmp_path):
    first = start_beats(env, tmp_path, services, 2)
    eventually(leader_pid, lambda pid: pid is not None, 20, "a leader", services)
    pid = leader_pid()
    leader = next(b for b in first if b.proc.pid == pid)
    standby = next(b for b in first if b is not leader)

    os.kill(pid, signal.SIGKILL)
    killed_at = dt.datetime.now(dt.UTC)

    def first_by(service):
        return Dispatch.objects.filter(
            dispatched_by__contains=f":{service.proc.pid}:").order_by("dispatched_at").first()

    took_over = eventually(lambda: first_by(standby), bool, TTL + 60, "standby to take over",
                           services).dispatched_at
    # The documented bound: within the lease TTL plus one tick (the ledger's own timestamp).
    assert (took_over - killed_at).total_seconds() <= TTL + TICK, took_over - killed_at

    third = start_beats(env, tmp_path, services, 1)[0]
    eventually(
        lambda: BeatHeartbeat.objects.filter(pid=third.proc.pid, stopped_at=None).exists(),
        bool, 20, "a new standby", services,
    )
    standby_pid = standby.proc.pid
    standby.proc.send_signal(signal.SIGTERM)
    took_over = eventually(lambda: first_by(third), bool, 60, "the new standby to take over",
                           services).dispatched_at
    assert standby.stop() == 0
    released = BeatHeartbeat.objects.get(pid=standby_pid).stopped_at  # lease given back
    # The documented bound: a released lease is taken at once, on the standby's next tick.
    assert (took_over - released).total_seconds() <= TICK, took_over - released
    assert_each_slot_ran_once(env, services)


def test_sigkill_right_after_a_dispatch_and_restart_sends_no_slot_twice(env, services, tmp_path):
    (one,) = start_beats(env, tmp_path, services, 1)
    sent = Dispatch.objects.filter(kind="scheduled")
    eventually(sent.count, lambda n: n >= 3, 30, "dispatches", services)
    last = sent.count()
    eventually(sent.count, lambda n: n > last, 5, "one more", services)
    os.kill(one.proc.pid, signal.SIGKILL)  # within a second of a dispatch
    one.stop()
    (again,) = start_beats(env, tmp_path, services, 1)
    eventually(
        lambda: sent.filter(dispatched_by__contains=f":{again.proc.pid}:").count(),
        lambda n: n >= 3, TTL + 20, "the restarted beat to dispatch", services,
    )
    assert again.stop() == 0
    runs = assert_each_slot_ran_once(env, services)
    assert len(runs) >= 6
