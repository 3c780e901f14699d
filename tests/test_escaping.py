"""Every admin and dashboard page with hostile values in task ids, names, exception messages,
arguments and reasons: each answers 200 and shows them as text, never as markup."""

import datetime as dt
import json

import pytest
from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from deadletters.models import DeadLetter
from monitoring.models import AlertState
from scheduling.beat import Dispatch, ScheduleChange, WorkerProcess

pytestmark = pytest.mark.django_db
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE = f"{SCRIPT}{IMG}{{0}}"


def hostile_rows():
    now = timezone.now()
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    job = PeriodicTask.objects.create(name=f"job {HOSTILE}", task="scheduling.expire_coupons",
                                      interval=every, description=HOSTILE,
                                      kwargs=json.dumps({"x": HOSTILE}))
    Dispatch.objects.create(periodic_task=job, job_name=job.name, slot=now, state="failed",
                            task_id=f"id-{HOSTILE}", task_name=job.task, error=HOSTILE,
                            dispatched_at=now, started_at=now, finished_at=now,
                            result={"note": HOSTILE})
    parent = DeadLetter.objects.create(
        task_id=f"parent-{HOSTILE}", task_name=f"task-{HOSTILE}", args=[HOSTILE],
        kwargs={"k": HOSTILE}, exception_type=f"Error{HOSTILE}", exception_message=HOSTILE,
        traceback=HOSTILE, periodic_task_name=job.name, worker=HOSTILE,
        resolution_note=HOSTILE, requeued_task_id=f"child-{HOSTILE}")
    DeadLetter.objects.create(
        task_id=f"child-{HOSTILE}", task_name=parent.task_name, exception_type="E",
        exception_message=HOSTILE, requeued_from=parent)
    ScheduleChange.objects.create(periodic_task=job, task_name=job.name, action="paused",
                                  reason=HOSTILE, changes={"name": [HOSTILE, HOSTILE]})
    AlertState.objects.create(subject=f"job:{HOSTILE}", reason=HOSTILE, changed_at=now)
    WorkerProcess.objects.create(hostname=f"w-{HOSTILE}", pid=1, started_at=now,
                                 last_seen_at=now, queues=[{"name": HOSTILE}], tasks=[HOSTILE])
    TaskResult.objects.create(task_id=f"result-{HOSTILE}", task_name=HOSTILE, status="FAILURE",
                              result=f'"{HOSTILE}"', traceback=HOSTILE,
                              date_done=now - dt.timedelta(seconds=1))
    return job


def pages(job, user):
    yield "/monitoring/"
    yield "/monitoring/?status=bad&q=%3Cscript%3E"
    yield f"/monitoring/jobs/{job.pk}/"
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        try:
            yield reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        except NoReverseMatch:
            continue
        for pk in model_admin.get_queryset(_request(user)).values_list("pk", flat=True)[:3]:
            yield reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[pk])


def _request(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = user
    return request


def test_every_page_shows_hostile_values_as_text(admin_client, superuser):
    job = hostile_rows()
    checked, shown = 0, set()
    for url in pages(job, superuser):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert SCRIPT not in body, url
        assert "<img src=x" not in body, url
        if "&lt;script&gt;alert(1)&lt;/script&gt;" in body:
            shown.add(url)
        checked += 1
    assert checked > 20
    # The values are on the pages (escaped), not merely absent.
    parent = DeadLetter.objects.get(task_id__startswith="parent-")
    for url in ("/monitoring/", f"/monitoring/jobs/{job.pk}/",
                f"/admin/deadletters/deadletter/{parent.pk}/change/",
                "/admin/scheduling/dispatch/", "/admin/scheduling/schedulechange/"):
        assert url in shown, url
