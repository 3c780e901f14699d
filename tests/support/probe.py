"""The project's Celery app plus a probe task for end-to-end tests: each run appends what it was
(periodic task name, slot header, task id) to a Redis list, so tests count runs by effect.

Started as ``celery -A tests.support.probe worker``; beat sends ``tests.probe`` by name.
"""

import json
import time
from pathlib import Path

import redis

from project.celery import app

RUNS_KEY = "probe:runs"


@app.task(name="tests.probe", bind=True)
def probe(self, **kwargs):
    redis.Redis.from_url(app.conf.broker_url).rpush(RUNS_KEY, json.dumps({
        "kwargs": kwargs,
        "name": getattr(self.request, "periodic_task_name", None),
        "slot": getattr(self.request, "scheduled_slot", None),
        "id": self.request.id,
        "at": time.time(),
    }))


def runs(broker_url: str) -> list[dict]:
    return [json.loads(raw) for raw in redis.Redis.from_url(broker_url).lrange(RUNS_KEY, 0, -1)]


# --- tasks that fail, one per way a task can fail for good (tests/e2e/test_dead_letters.py) ---
import os  # noqa: E402
import signal  # noqa: E402

from celery.exceptions import Reject  # noqa: E402


def _redis():
    return redis.Redis.from_url(app.conf.broker_url)


@app.task(name="tests.fail_after_retries", bind=True, max_retries=2, default_retry_delay=0)
def fail_after_retries(self):
    try:
        raise RuntimeError("fails every time")
    except RuntimeError as exc:
        raise self.retry(exc=exc, countdown=0) from exc


@app.task(name="tests.autoretry_exhausted", autoretry_for=(ConnectionError,), max_retries=2,
          retry_backoff=False, default_retry_delay=0)
def autoretry_exhausted():
    raise ConnectionError("the service stays down")


@app.task(name="tests.permanent_error")
def permanent_error(amount):
    raise ValueError(f"amount must be positive, got {amount}")


@app.task(name="tests.hard_time_limit", time_limit=2, soft_time_limit=1.5)
def hard_time_limit():
    from celery.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(10)
    except SoftTimeLimitExceeded:
        time.sleep(10)  # ignores the soft limit: the hard limit kills the process


@app.task(name="tests.kill_pool_process")
def kill_pool_process():
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.reject")
def reject():
    raise Reject(RuntimeError("message refused"), requeue=False)


@app.task(name="tests.poison", acks_late=True, reject_on_worker_lost=True)
def poison():
    _redis().incr("probe:poison-runs")
    os.kill(os.getpid(), signal.SIGKILL)


@app.task(name="tests.flaky", bind=True, max_retries=3, default_retry_delay=0)
def flaky(self, key, failures):
    attempt = _redis().incr(key)
    if attempt <= failures:
        raise self.retry(exc=RuntimeError(f"attempt {attempt} fails"), countdown=0)
    return attempt


@app.task(name="tests.until_fixed")
def until_fixed(key, **kwargs):
    if _redis().get(key) != b"fixed":
        raise RuntimeError(f"{key} is not fixed yet")
    return "ok"


@app.task(name="tests.noop")
def noop():
    return None


@app.task(name="tests.slow", acks_late=True)
def slow(seconds, marker):
    """Takes a while, acknowledged late; touches ``marker`` when it starts (not Redis: the fault
    tests stop Redis while this runs)."""
    Path(marker).touch()
    time.sleep(seconds)
    return seconds


@app.task(name="tests.hold")
def hold(path):
    """Runs while the file ``path`` exists (touches ``path.started`` first): a run in flight for
    as long as a test needs one."""
    Path(f"{path}.started").touch()
    while Path(path).exists():
        time.sleep(0.05)


@app.task(name="tests.db_backend")
def db_backend():
    """The PostgreSQL backend pid this worker process's connection has (what reuse keeps)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@app.task(name="tests.fail_late", acks_late=True)
def fail_late(path):
    """Like ``hold``, acknowledged late, then fails for good (a dead letter): the database
    fault test stops PostgreSQL while this runs, so the failure meets the outage."""
    Path(f"{path}.started").touch()
    while Path(path).exists():
        time.sleep(0.05)
    raise ValueError("failed for good while the database was away")
