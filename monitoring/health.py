"""Cheap, bounded probes of the parts outside this process: database, broker, workers, queues.
Each answers within about a second, also when the thing probed is down."""

from __future__ import annotations

import os
from pathlib import Path

import redis
from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import connection

TIMEOUT = 1.0
WORKERS_CACHE = "monitoring:workers"


def database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, "ok"
    except Exception as exc:  # any driver error means "not reachable" to a probe
        return False, f"database unreachable ({type(exc).__name__})"


def _redis():
    return redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )


def broker_ok() -> tuple[bool, str]:
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://")):
            _redis().ping()
        else:  # kombu's filesystem broker: its folders are the broker
            folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]
            if not os.access(folder, os.W_OK):
                return False, "broker folder is not writable"
        return True, "ok"
    except Exception as exc:
        return False, f"broker unreachable ({type(exc).__name__})"


def queue_names() -> list[str]:
    from django_celery_beat.models import PeriodicTask

    names = {current_app.conf.task_default_queue or "celery"}
    names.update(q for q in PeriodicTask.objects.exclude(queue__isnull=True)
                 .exclude(queue="").values_list("queue", flat=True).distinct())
    return sorted(names)


def queue_lengths() -> dict[str, int | None]:
    """Messages waiting per queue (None when it cannot be read)."""
    names = queue_names()
    url = settings.CELERY_BROKER_URL
    try:
        if url.startswith(("redis://", "rediss://")):
            client = _redis()
            return {name: int(client.llen(name)) for name in names}
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        waiting = sum(1 for _ in folder.glob("*.msg")) if folder.is_dir() else 0
        return {names[0]: waiting, **{n: None for n in names[1:]}}
    except Exception:
        return {name: None for name in names}


def workers_online(*, max_age: float = 10.0) -> list[str] | None:
    """Hostnames answering ``celery inspect ping`` (cached ``max_age`` seconds so a busy health
    endpoint never broadcasts per request); None when the broker is down."""
    cached = cache.get(WORKERS_CACHE)
    if cached is not None:
        return cached["workers"]
    ok, _ = broker_ok()
    workers = None
    if ok:
        try:
            replies = current_app.control.ping(timeout=TIMEOUT) or []
            workers = sorted(name for reply in replies for name in reply)
        except Exception:
            workers = None
    cache.set(WORKERS_CACHE, {"workers": workers}, max_age)
    return workers
