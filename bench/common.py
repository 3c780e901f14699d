"""What the scheduler, dead-letter and monitoring benchmarks share: environment defaults, Django
started on the benchmark database (created and migrated if missing), percentiles."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def configure(**overrides: str) -> None:
    """Environment for a benchmark process (before Django starts)."""
    for path in (str(ROOT), str(ROOT / "bench")):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/billing_bench")
    os.environ.setdefault("DJANGO_DEBUG", "0")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-used-anywhere-else")
    os.environ["CELERY_BROKER_URL"] = os.environ.get("BENCH_REDIS_URL",
                                                     "redis://127.0.0.1:6379/14")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
    os.environ["DJANGO_SECURE_SSL_REDIRECT"] = "0"
    os.environ.update(overrides)


def start_django() -> None:
    """Django set up on the benchmark database, migrated; test client context available."""
    import django
    from jobs import ensure_database

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    ensure_database()
    call_command("migrate", verbosity=0)
    setup_test_environment()  # the admin test client reads response.context


def disabled_job(name: str, task: str):
    """A disabled hourly periodic task to hang benchmark ledger rows on, without the rows an
    interrupted run left."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from scheduling.beat import Dispatch

    every, _ = IntervalSchedule.objects.get_or_create(every=3600, period="seconds")
    job, _ = PeriodicTask.objects.get_or_create(
        name=name, defaults={"task": task, "interval": every, "enabled": False})
    Dispatch.objects.filter(periodic_task=job).delete()
    return job


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]
