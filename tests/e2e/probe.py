"""The project's Celery app plus a probe task for end-to-end tests: each run appends what it was
(periodic task name, slot header, task id) to a Redis list, so tests count runs by effect.

Started as ``celery -A tests.e2e.probe worker``; beat sends ``tests.probe`` by name.
"""

import json
import time

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
