"""Database faults: a beat and a worker (real processes) on a PostgreSQL cluster and a Redis this
test starts on free ports of its own (``initdb`` + ``pg_ctl``; never the machine's shared
server), while PostgreSQL is taken away:

1. stopped for 20 s in the middle of a long ``expire_coupons`` run (batches of 50 over 60,000
   due coupons): the batch in flight fails, the retry is stored while the database is down, the
   retried run waits, is put back on the queue when the wait (``DB_OUTAGE_WAIT``, 5 s here) runs
   out, and runs once PostgreSQL is back;
2. restarted while the worker idles between runs holding a reused connection: the next run
   succeeds on its first attempt (the health check replaced the connection);
3. stopped for 12 s as a late-acknowledged task fails for good: neither its failure nor its
   dead letter can be written, so its message goes back to the queue instead of being
   acknowledged; once PostgreSQL is back it runs again and the dead letter is written.

Afterwards, from the ledger and the coupons: every run succeeded or is a pending dead letter, no
row is left ``sent``, none is ``lost``; the ledger's per-batch counts add up to the coupons
actually expired, killed batches included; no active coupon is left overdue; beat skipped a slot
only while a run was really under way, and the interrupted run finished soon after PostgreSQL
came back. `make chaos` repeats the cycle for FAULTS_MINUTES.
"""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg2
import pytest

from tests.support.processes import (
    ROOT,
    OwnPostgres,
    OwnRedis,
    beat,
    eventually,
    wait_for_ping,
    worker,
)

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
MINUTES = float(os.environ.get("FAULTS_MINUTES", "0"))  # 0: one cycle (make test)
OUTAGE_S = 20
SEED = """
import datetime as dt
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from scheduling.billing.models import Coupon
now = timezone.now()
due = [Coupon(code=f"D{i:06d}", expires_at=now - dt.timedelta(hours=1)) for i in range(60000)]
# ... and five a second coming due for the rest of the test, so every later run has work.
later = [Coupon(code=f"L{i:06d}", expires_at=now + dt.timedelta(seconds=i / 5))
         for i in range(int(5 * 60 * {horizon_min}))]
Coupon.objects.bulk_create(due + later, batch_size=5000)
every, _ = IntervalSchedule.objects.get_or_create(every=2, period="seconds")
PeriodicTask.objects.all().delete()  # (the migrations seed the default schedules)
PeriodicTask.objects.create(name="expire-coupons", task="scheduling.expire_coupons",
                            interval=every)
"""


class Stack:
    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.pg = OwnPostgres()
        self.pg.start()
        self.redis = OwnRedis(tmp_path / "redis")
        self.redis.start()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.pg.url, "CELERY_BROKER_URL": self.redis.url,
            "LOG_FORMAT": "json", "DB_OUTAGE_WAIT": "5",
            "SCHEDULING_BATCH_SIZE": "50", "SCHEDULING_BATCH_MAX": "50",
            "CELERY_TASK_SOFT_TIME_LIMIT": "90", "CELERY_TASK_TIME_LIMIT": "100",
            "CELERY_VISIBILITY_TIMEOUT": "300", "SCHEDULING_BEAT_LEASE_TTL": "5",
        }
        self.manage("migrate", "--noinput")
        self.manage("shell", "-c", SEED.replace("{horizon_min}", str(MINUTES + 5)))
        self.hostname = f"dbfault-{uuid.uuid4().hex[:4]}@{socket.gethostname()}"
        self.worker = worker(self.env, tmp_path, self.hostname, app="tests.support.probe",
                             concurrency=1).start()
        wait_for_ping(self.env, self.hostname, timeout=90)
        self.beat = beat(self.env, tmp_path, name="beat").start()
        self.faults: list[dict] = []

    def manage(self, *argv: str):
        done = subprocess.run([sys.executable, "manage.py", *argv], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]

    def services(self):
        return [self.beat, self.worker]

    def query(self, sql: str, *params):
        """One query on the test's own cluster (``None`` while it is down)."""
        try:
            db = psycopg2.connect(self.pg.url, connect_timeout=3)
        except psycopg2.OperationalError:
            return None
        try:
            with db.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall()
        except psycopg2.OperationalError:
            return None
        finally:
            db.close()

    def events(self, service) -> list[dict]:
        found = []
        for line in service.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def stop(self):
        for service in self.services():
            service.stop()
        self.redis.stop()
        self.pg.remove()


def mid_run_outage(stack: Stack) -> dict:
    """PostgreSQL stopped while a run is committing batches, for OUTAGE_S seconds."""
    running = eventually(
        lambda: stack.query("SELECT task_id, rows_done FROM scheduling_dispatch WHERE state = "
                            "'sent' AND rows_done > 0 ORDER BY slot LIMIT 1"),
        bool, 90, "a run with committed batches", stack.services())
    task_id, rows_before = running[0]
    stack.pg.stop("fast")
    time.sleep(OUTAGE_S)  # the fault itself: how long PostgreSQL stays away
    stack.pg.start()
    back = time.monotonic()
    state = eventually(
        lambda: stack.query("SELECT state, rows_done FROM scheduling_dispatch "
                            "WHERE task_id = %s", task_id),
        lambda rows: rows and rows[0][0] not in ("sent", "reserved"), 120,
        "the interrupted run to end", stack.services())
    finished_after = round(time.monotonic() - back, 1)
    assert state[0][0] == "succeeded", state
    return {"fault": "PostgreSQL stopped mid-run", "task_id": task_id, "down_s": OUTAGE_S,
            "rows_before_stop": rows_before, "rows_counted": state[0][1],
            "finished_s_after_back": finished_after}


def restart_between_runs(stack: Stack) -> dict:
    """PostgreSQL restarted (fast) while the worker holds its reused connection."""
    newest = stack.query("SELECT coalesce(max(slot), now()) FROM scheduling_dispatch")[0][0]
    eventually(lambda: stack.query("SELECT count(*) FROM scheduling_dispatch WHERE state = "
                                   "'sent'"), lambda rows: rows and rows[0][0] == 0, 60,
               "the worker to be idle", stack.services())
    stack.pg.stop("fast")
    stack.pg.start()
    after = eventually(
        lambda: stack.query("SELECT task_id, state FROM scheduling_dispatch WHERE slot > %s "
                            "AND kind = 'scheduled' AND state NOT IN ('sent', 'reserved') "
                            "ORDER BY slot LIMIT 1", newest),
        bool, 60, "a run after the restart", stack.services())
    task_id, state = after[0]
    assert state == "succeeded", after
    retried = [e for e in stack.events(stack.worker)
               if e.get("task_id") == task_id and e.get("event", "").startswith("database.")]
    assert not retried, f"the run after the restart had to wait for the database: {retried}"
    return {"fault": "PostgreSQL restarted between runs", "task_id": task_id}


def failure_during_outage(stack: Stack) -> dict:
    """A late-acknowledged task fails for good while PostgreSQL is down: its failure cannot be
    stored nor its dead letter written, so its message goes back to the queue; once the database
    is back it runs again and its dead letter is written."""
    from project.celery import app

    hold = stack.tmp / f"hold-{uuid.uuid4().hex[:6]}"
    hold.touch()
    with app.connection_for_write(stack.redis.url) as broker:
        task_id = app.send_task("tests.fail_late", args=[str(hold)], connection=broker).id
    eventually(Path(f"{hold}.started").exists, bool, 60, "the task to start", stack.services())
    stack.pg.stop("fast")
    hold.unlink()  # it fails now, with the database away
    time.sleep(12)  # the fault: longer than DB_OUTAGE_WAIT, so the wait runs out
    stack.pg.start()
    letter = eventually(
        lambda: stack.query("SELECT status, exception_message FROM deadletters_deadletter "
                            "WHERE task_id = %s", task_id), bool, 90,
        "the dead letter once the database is back", stack.services())
    assert letter[0] == ("pending", "failed for good while the database was away"), letter
    put_back = [e for e in stack.events(stack.worker)
                if e.get("event") in ("run.put_back", "deadletter.put_back")
                and e.get("task_id") == task_id]
    assert put_back, "the failure was not put back while the database was away"
    return {"fault": "PostgreSQL stopped as a task failed for good", "task_id": task_id,
            "put_back": len(put_back)}


def test_runs_survive_postgresql_going_away(tmp_path, capsys):
    stack = Stack(tmp_path)
    cycles = 0
    try:
        deadline = time.monotonic() + MINUTES * 60
        while True:
            if cycles:  # a new long run for the next cycle: 60,000 more due coupons
                stack.manage("shell", "-c", (
                    "import datetime as dt; from django.utils import timezone; "
                    "from scheduling.billing.models import Coupon; now = timezone.now(); "
                    f"Coupon.objects.bulk_create([Coupon(code=f'C{cycles}-{{i}}', "
                    "expires_at=now - dt.timedelta(hours=1)) for i in range(60000)], "
                    "batch_size=5000)"))
            stack.faults.append(mid_run_outage(stack))
            stack.faults.append(restart_between_runs(stack))
            stack.faults.append(failure_during_outage(stack))
            cycles += 1
            if time.monotonic() >= deadline:
                break
        ended = stack.query("SELECT now()")[0][0]
        stack.beat.stop()  # stop dispatching, then let the worker drain
        eventually(lambda: stack.query(
            "SELECT count(*) FROM scheduling_dispatch d WHERE state IN ('sent', 'reserved') "
            "AND NOT EXISTS (SELECT 1 FROM deadletters_deadletter l WHERE l.task_id = d.task_id "
            "AND l.status = 'pending')"), lambda rows: rows and rows[0][0] == 0, 120,
            "every dispatched run to finish", stack.services())
        summary = check(stack, ended)
        worker_events = [e.get("event") for e in stack.events(stack.worker)]
        summary.update(cycles=cycles, faults=stack.faults, worker_events={
            name: worker_events.count(name) for name in (
                "database.waiting", "database.back", "database.unavailable", "run.put_back",
                "result.not_stored", "deadletter.put_back")})
        # The outage really reached the run's own writes (a retry stored while the database
        # was down, a run put back): without them this test would not test the waiting.
        assert summary["worker_events"]["database.waiting"] >= 1, summary
        assert summary["worker_events"]["run.put_back"] >= 1, summary
    finally:
        stack.stop()
    with capsys.disabled():
        print("\ndatabase-fault summary:", json.dumps(summary, indent=2, default=str))


def check(stack: Stack, ended) -> dict:
    rows = stack.query("SELECT d.kind, d.state, d.task_id, d.rows_done, d.dispatched_at, "
                       "d.finished_at, d.error, l.id FROM scheduling_dispatch d LEFT JOIN "
                       "deadletters_deadletter l ON l.task_id = d.task_id AND "
                       "l.status = 'pending' ORDER BY d.slot")
    runs = [r for r in rows if r[0] == "scheduled"]
    # 1. every run succeeded or is a pending dead letter; none sent, none lost.
    unresolved = [r for r in runs if r[1] != "succeeded" and r[7] is None]
    assert not unresolved, f"runs neither succeeded nor dead letters: {unresolved[:5]}"
    # 2. the ledger's per-batch counts are the coupons expired (every attempt, once each).
    counted = sum(r[3] for r in rows)
    expired = stack.query("SELECT count(*) FROM scheduling_coupon WHERE status = 'expired'")[0][0]
    assert counted == expired, (counted, expired)
    overdue = stack.query("SELECT count(*) FROM scheduling_coupon WHERE status = 'active' AND "
                          "expires_at <= %s - interval '30 seconds'", ended)[0][0]
    assert overdue == 0, f"{overdue} coupons past expiry were left active"
    # 3. a slot was skipped only while a run was under way (dispatched, not yet finished).
    skipped = [r for r in rows if r[0] == "skipped"]
    spans = [(r[4], r[5]) for r in runs if r[5] is not None]
    unexplained = [r[4] for r in skipped
                   if not any(start <= r[4] <= end for start, end in spans)]
    assert not unexplained, f"slots skipped with no run under way: {unexplained[:5]}"
    # 4. the interrupted runs finished soon after PostgreSQL came back (nothing waited for a
    # visibility timeout or a lost-run check).
    slow = [f for f in stack.faults if f.get("finished_s_after_back", 0) > 60]
    assert not slow, slow
    return {"runs": len(runs), "succeeded": sum(1 for r in runs if r[1] == "succeeded"),
            "dead_letters": sum(1 for r in runs if r[7] is not None), "skipped": len(skipped),
            "coupons_expired": expired, "rows_counted": counted,
            "ledger": dict(Counter(f"{r[0]} {r[1]}" for r in rows))}
