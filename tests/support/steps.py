"""How a test runs the scenario steps (``tests.support.scenario``) in this process, on
pytest-django's PostgreSQL test database, with the environment real processes need to share it."""

import json
import os

import redis
from django.db import connection

from tests.support import scenario


def postgres_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class InProcess:
    """Scenario steps run here, on pytest-django's PostgreSQL test database."""

    def __init__(self, tmp_path):
        broker = os.environ["CELERY_BROKER_URL"]
        redis.Redis.from_url(broker).flushdb()
        self.env = {
            **os.environ,
            "DATABASE_URL": postgres_url(),
            "CELERY_BROKER_URL": broker,
            "LOG_FORMAT": "json",
        }

    def __call__(self, step, **kwargs):
        return json.loads(json.dumps(getattr(scenario, step)(**kwargs)))


