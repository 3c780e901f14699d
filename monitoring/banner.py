"""The admin's warning when schedules are not being honoured: no beat alive, or jobs red. Shown
on the admin index and the periodic task pages (where schedules are edited), from a context
processor; cached like the health answers (``MONITORING_HEALTH_CACHE`` seconds per process), and
never an error page: a failure to compute it shows no banner and is logged."""

from __future__ import annotations

import structlog
from django.conf import settings
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

log = structlog.get_logger(__name__)
CACHE_KEY = "monitoring:admin-banner"
SCHEDULES = "django_celery_beat/periodictask/"  # the periodic task pages, under the admin root


def scheduler_banner(request) -> dict:
    """Context processor: ``{"scheduler_banner": {...}}`` on the pages that need it."""
    match = getattr(request, "resolver_match", None)
    if match is None or match.app_name != "admin" or not getattr(request.user, "is_staff", False):
        return {}
    relative = request.path.removeprefix(reverse("admin:index"))
    if not (relative == "" or relative.startswith(SCHEDULES)):
        return {}
    banner = cache.get(CACHE_KEY)
    if banner is None:
        banner = compute()
        cache.set(CACHE_KEY, banner, settings.MONITORING_HEALTH_CACHE)
    return {"scheduler_banner": banner} if banner else {}


def compute() -> dict | bool:
    """The banner's text, or False when all is well (or its state cannot be read)."""
    from monitoring.status import BAD, beat_state, job_statuses, unscheduled_jobs

    now = timezone.now()
    try:
        beat = beat_state(now)
        if unscheduled_jobs(beat):
            return {"title": "No scheduler is running: these schedules are not being honoured.",
                    "detail": beat.problems[0]}
        red = [job for job in job_statuses(now, outcomes=False) if job.status in BAD]
    except Exception as exc:  # the banner never breaks the admin (database or broker down)
        log.warning("admin.banner_failed", error=repr(exc))
        return False
    if red:
        names = ", ".join(job.name for job in red[:5]) + (", ..." if len(red) > 5 else "")
        return {"title": f"{len(red)} job(s) are not doing their work: {names}.",
                "detail": "See the dashboard for the stage that is stuck."}
    return False
