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
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitoring import health
from monitoring.liveness import evaluate
from monitoring.status import BAD as BAD_SET
from monitoring.status import progress_text


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


#: The dashboard shows this many jobs per page, red ones first.
PAGE_SIZE = 50


def _sorted_for_people(jobs):
    """Red first (alerting before slow), then the rest; by name within each."""
    from monitoring.status import ALERTING, BAD

    def rank(job):
        return (0 if job.status in ALERTING else 1 if job.status in BAD else 2, job.name)

    return sorted(jobs, key=rank)


@staff_member_required
@never_cache
def dashboard(request):
    from deadletters.models import DeadLetter
    from monitoring.status import (
        Status,
        beat_state,
        job_statuses,
        live_workers,
        recent_runs,
        workers_per_queue,
    )

    now = timezone.now()
    wanted, query = request.GET.get("status", ""), request.GET.get("q", "").strip()
    jobs = job_statuses(now)
    counts = {}
    for job in jobs:
        counts[job.status] = counts.get(job.status, 0) + 1
    shown = [job for job in jobs
             if (not wanted or job.status == wanted or (wanted == "bad" and job.status in BAD_SET))
             and (not query or query.lower() in job.name.lower()
                  or query.lower() in job.task.lower())]
    page = Paginator(_sorted_for_people(shown), PAGE_SIZE).get_page(request.GET.get("page"))
    recent = recent_runs([job.pk for job in page])
    pending = dict(
        DeadLetter.objects.pending().values_list("task_name").annotate(n=Count("pk"))
    )
    rows = []
    for job in page:
        cells = [{"state": state, "slot": slot, "kind": kind}
                 for state, slot, kind in reversed(recent.get(job.pk, []))]
        rows.append({"job": job, "cells": cells, "dead_letters": pending.get(job.task, 0),
                     "progress": progress_text(job.progress)})
    workers = live_workers(now)
    return render(request, "monitoring/dashboard.html", {
        "now": now,
        "rows": rows,
        "page": page,
        "total": len(jobs),
        "matching": len(shown),
        "statuses": [(s.value, s.label, counts.get(s.value, 0)) for s in Status],
        "bad": sum(counts.get(s, 0) for s in BAD_SET),
        "wanted": wanted,
        "query": query,
        "beat": beat_state(now),
        "workers": workers,
        "per_queue": workers_per_queue(workers),
        "queues": health.queue_lengths(),
        "pending_dead_letters": sum(pending.values()),
        "deleted": _deleted_jobs(),
        "refresh": 10,
    })


def _deleted_jobs(limit: int = 20) -> list[dict]:
    """Jobs deleted from the schedule whose ledger rows remain, under the name they had."""
    from django.db.models import Max

    from scheduling.beat import Dispatch

    return list(Dispatch.objects.filter(periodic_task__isnull=True).values("job_name")
                .annotate(rows=Count("pk"), last=Max("slot")).order_by("-last")[:limit])


@staff_member_required
@never_cache
def job_detail(request, pk: int):
    """One job: status and reason, schedule, next runs, the last 100 runs as a chart, its
    schedule changes, its dead letters and its thresholds."""
    from django_celery_beat.models import PeriodicTask

    from deadletters.models import DeadLetter
    from monitoring.charts import run_chart
    from monitoring.models import JobMonitor
    from monitoring.status import job_statuses
    from scheduling.beat import Dispatch, ScheduleChange, upcoming_runs

    now = timezone.now()
    model = get_object_or_404(PeriodicTask.objects.select_related(
        "crontab", "interval", "solar", "clocked"), pk=pk)
    job = job_statuses(now, pks=[pk])[0]
    runs = list(Dispatch.objects.filter(periodic_task=model).order_by("-slot")[:100])
    try:
        upcoming = upcoming_runs(model, now, 5)
    except Exception:
        upcoming = []
    monitor = JobMonitor.objects.filter(periodic_task=model).first() or JobMonitor(
        periodic_task=model)
    return render(request, "monitoring/job.html", {
        "now": now,
        "job": job,
        "model": model,
        "upcoming": upcoming,
        "chart": run_chart(list(reversed(runs))),
        "runs": runs[:20],
        "changes": ScheduleChange.objects.filter(periodic_task=model)[:20],
        "dead_letters": DeadLetter.objects.filter(
            Q(periodic_task_name=model.name) | Q(periodic_task_name="", task_name=model.task)
        ).order_by("-failed_at")[:20],
        "monitor": monitor,
        "refresh": 10,
    })
