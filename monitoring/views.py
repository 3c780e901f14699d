"""Health endpoints, Prometheus metrics and the staff dashboard.

The public answer of a health endpoint is the status alone; detail (which job, why) is for staff
or a request with ``Authorization: Bearer <HEALTH_TOKEN>``. Nothing secret is ever in an answer.
Results are cached for ``MONITORING_HEALTH_CACHE`` seconds per process.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.db.models import Count
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring import health
from monitoring.liveness import evaluate


def authorized(request) -> bool:
    token = settings.HEALTH_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(
        header.removeprefix("Bearer ").strip(), token
    ):
        return True
    user = getattr(request, "user", None)
    return bool(user and user.is_active and user.is_staff)


def _answer(request, ok: bool, detail: dict) -> JsonResponse:
    body = {"status": "ok" if ok else "fail"}
    if authorized(request):
        body.update(detail)
    response = JsonResponse(body, status=200 if ok else 503)
    response["Cache-Control"] = "no-store"
    return response


def _cached(key: str, compute):
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, settings.MONITORING_HEALTH_CACHE)
    return value


@require_GET
def live(request):
    return HttpResponse("ok", content_type="text/plain")


@require_GET
@never_cache
def ready(request):
    def compute():
        db_ok, db = health.database_ok()
        broker_ok, broker = health.broker_ok()
        return db_ok and broker_ok, {"database": db, "broker": broker}

    ok, detail = _cached("monitoring:ready", compute)
    return _answer(request, ok, detail)


@require_GET
@never_cache
def scheduler(request):
    def compute():
        try:
            result = evaluate(timezone.now())
            return result.ok, result.as_dict()
        except Exception as exc:
            return False, {"problems": [f"database: unreachable ({type(exc).__name__})"]}

    ok, detail = _cached("monitoring:scheduler", compute)
    return _answer(request, ok, detail)


@require_GET
@never_cache
def metrics(request):
    if not authorized(request):
        return HttpResponse("metrics need staff or the health token\n", status=401,
                            content_type="text/plain")
    from monitoring.metrics import render_metrics

    body, content_type = _cached("monitoring:metrics", render_metrics)
    return HttpResponse(body, content_type=content_type)


@staff_member_required
@never_cache
def dashboard(request):
    from deadletters.models import DeadLetter
    from monitoring.status import beat_state, job_statuses

    now = timezone.now()
    jobs = job_statuses(now)
    pending = dict(
        DeadLetter.objects.pending().values_list("task_name").annotate(n=Count("pk"))
    )
    rows = []
    for job in jobs:
        cells = [{"state": state if kind != "missed" else "missed", "slot": slot, "kind": kind}
                 for state, slot, kind in reversed(job.recent)]
        rows.append({"job": job, "cells": cells, "dead_letters": pending.get(job.task, 0)})
    return render(request, "monitoring/dashboard.html", {
        "now": now,
        "rows": rows,
        "beat": beat_state(now),
        "workers": health.workers_online(),
        "queues": health.queue_lengths(),
        "pending_dead_letters": sum(pending.values()),
        "refresh": 10,
    })
