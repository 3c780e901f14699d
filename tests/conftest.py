import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection

# Processes the tests start never read a developer's .env (make test sets this too).
os.environ.setdefault("DJANGO_ENV_FILE", "")


def pytest_sessionstart(session):
    # The suite is about PostgreSQL behaviour (batches, locks, constraints): refuse to pass
    # quietly on SQLite. `make test` sets DATABASE_URL; the embedded default has its own tests.
    if connection.vendor != "postgresql":
        pytest.exit(
            "tests need PostgreSQL: run `make test`, or set DATABASE_URL=postgres://... "
            "and CELERY_BROKER_URL=redis://...",
            returncode=2,
        )
    collect_static()


def collect_static():
    """Production settings serve collected, hashed static files (as the image does after its
    build step): collect them once into a folder of this run, for this process and the
    processes the tests start (they inherit ``DJANGO_STATIC_ROOT``)."""
    from django.core.management import call_command

    root = Path(tempfile.mkdtemp(prefix="billing-static-"))
    os.environ["DJANGO_STATIC_ROOT"] = str(root)
    settings.STATIC_ROOT = str(root)
    call_command("collectstatic", interactive=False, verbosity=0)
    return root


def pytest_sessionfinish(session, exitstatus):
    root = os.environ.get("DJANGO_STATIC_ROOT", "")
    if Path(root).name.startswith("billing-static-"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache (health answers, the admin banner, workers seen)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.invalid", "pw")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def view_only_client(client, db):
    """Staff who may look at the schedules and billing rows but change nothing."""
    user = get_user_model().objects.create_user("viewer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(user)
    return client


@pytest.fixture
def only(db):
    """Leave only the periodic tasks a test creates (the seeded defaults would dispatch too)."""
    from django_celery_beat.models import PeriodicTask

    PeriodicTask.objects.all().delete()


@pytest.fixture
def live_worker(db):
    """A worker registry row: a live worker on the default queue with every task of the app
    registered (what a real worker writes on start; e2e tests run real ones)."""
    from django.utils import timezone

    from scheduling.beat import WorkerProcess, registered_task_names

    def register(hostname="w1@test", queues=("celery",), tasks=None, **fields):
        now = timezone.now()
        return WorkerProcess.objects.update_or_create(hostname=hostname, defaults={
            "pid": 1, "started_at": now, "last_seen_at": now, "stopped_at": None,
            "queues": [{"name": name, "exchange": name, "type": "direct", "routing_key": name}
                       for name in queues],
            "tasks": sorted(registered_task_names()) if tasks is None else list(tasks),
            **fields})[0]

    register()
    return register


@pytest.fixture
def broker():
    """The test broker (Redis DB 15), empty before and after the test."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.flushdb()
    yield client
    client.flushdb()
