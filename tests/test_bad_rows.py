"""A bad schedule row harms only itself: refused at save with a message on the field, refused by
"run now" with the reason, failed by beat for its own slot while the other jobs of the tick go
out, and shown with its reason on every page while every other job is shown normally."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from structlog.testing import capture_logs

from monitoring.status import job_statuses
from scheduling.beat import Dispatch, services
from scheduling.engine.dispatch import dispatch_many
from tests.test_schedule_admin import CHANGELIST, change_url, post_edit

pytestmark = pytest.mark.django_db
FLAG = "scheduling.flag_expiring_cards"


@pytest.fixture
def job():
    return PeriodicTask.objects.get(name="flag-expiring-cards")


@pytest.mark.parametrize("field, value, message", [
    ("kwargs", "[45]", "kwargs must be a JSON object, not list"),
    ("args", '{"a": 1}', "args must be a JSON list, not dict"),
    ("headers", "[1, 2]", "headers must be a JSON object, not list"),
    ("kwargs", '{"within_dayz": 5}', "unexpected keyword argument 'within_dayz'"),
    ("kwargs", '{"within_days": -3}', "within_days must be between 0 and 3650, got -3"),
    ("kwargs", '{"within_days": "soon"}', "within_days must be a whole number of days"),
    ("args", "[1, 2]", "takes from 0 to 1 positional arguments but 2 were given"),
    ("args", "[7]", "got multiple values for argument 'within_days'"),  # and kwargs has it
])
def test_the_admin_refuses_what_beat_could_not_send_with_a_message_on_the_field(
        admin_client, job, field, value, message):
    before = (job.args, job.kwargs, job.headers)
    changes = {field: value}
    if value == "[1, 2]":
        changes["kwargs"] = "{}"
    response = post_edit(admin_client, job, **changes)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors[field]), errors
    job.refresh_from_db()
    assert (job.args, job.kwargs, job.headers) == before


def test_valid_arguments_are_saved(admin_client, job):
    response = post_edit(admin_client, job, kwargs='{"within_days": 45}')
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.kwargs == '{"within_days": 45}'


def test_validate_job_is_the_same_check_for_scripts(job):
    services.validate_job(job)  # the seeded row is fine
    job.kwargs = '{"within_dayz": 5}'
    with pytest.raises(ValidationError) as raised:
        services.validate_job(job)
    assert "within_dayz" in str(raised.value.message_dict["kwargs"])
    zero = IntervalSchedule.objects.create(every=0, period="seconds")
    job.kwargs, job.interval, job.crontab = "{}", zero, None
    with pytest.raises(ValidationError) as raised:
        services.validate_job(job)
    assert "must be positive" in str(raised.value.message_dict["interval"])


def bad_rows():
    """Rows as a script or data migration might write them (the admin refuses each)."""
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    zero = IntervalSchedule.objects.create(every=0, period="seconds")
    rows = {
        "list-kwargs": dict(task=FLAG, interval=every, kwargs="[45]"),
        "unknown-keyword": dict(task=FLAG, interval=every, kwargs='{"within_dayz": 5}'),
        "args-object": dict(task=FLAG, interval=every, args='{"a": 1}'),
        "list-headers": dict(task=FLAG, interval=every, headers="[1]"),
        "zero-interval": dict(task=FLAG, interval=zero),
        "sunday-as-7": dict(task=FLAG, crontab=CrontabSchedule.objects.create(
            minute="0", hour="3", day_of_week="7", timezone="UTC")),
    }
    return {name: PeriodicTask.objects.create(name=name, **fields)
            for name, fields in rows.items()}


def test_beat_fails_only_the_bad_jobs_slot_and_sends_the_others_of_the_tick(only):
    bad = bad_rows()
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    good = PeriodicTask.objects.create(name="good", task="scheduling.expire_coupons",
                                       interval=every)
    now = timezone.now()
    due = [(bad["unknown-keyword"], now), (good, now), (bad["list-kwargs"], now)]
    with capture_logs() as logs:
        sent = dispatch_many(due, now=now, by="test")
        dispatch_many([(bad["unknown-keyword"], now + dt.timedelta(seconds=60))],
                      now=now, by="test")
    assert [row.periodic_task.name for row in sent] == ["good"]
    assert Dispatch.objects.get(periodic_task=good).state == "sent"
    failed = Dispatch.objects.get(periodic_task=bad["unknown-keyword"], slot=now)
    assert failed.state == "failed" and "cannot send:" in failed.error
    assert "unexpected keyword argument 'within_dayz'" in failed.error
    assert Dispatch.objects.filter(periodic_task=bad["unknown-keyword"]).count() == 2
    errors = [e for e in logs if e["event"] == "beat.cannot_send"]
    assert [e["job"] for e in errors] == ["unknown-keyword", "list-kwargs"]  # once per error


def test_run_now_on_a_bad_row_answers_with_the_reason_never_a_500(
        admin_client, only, django_capture_on_commit_callbacks):
    bad = bad_rows()
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    good = PeriodicTask.objects.create(name="good", task="scheduling.expire_coupons",
                                       interval=every)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(CHANGELIST, {
            "action": "run_now", "_selected_action": [good.pk, bad["unknown-keyword"].pk,
                                                      bad["list-headers"].pk],
            "index": 0}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert "1 job was sent to the workers." in shown
    assert any(m.startswith("unknown-keyword was not sent:") and "within_dayz" in m
               for m in shown)
    assert any(m.startswith("list-headers was not sent: headers must be a JSON object")
               for m in shown)
    assert list(Dispatch.objects.values_list("periodic_task__name", flat=True)) == ["good"]


def test_every_page_answers_200_with_bad_rows_and_names_each_reason(
        admin_client, only, live_worker, client, settings):
    settings.HEALTH_TOKEN, settings.MONITORING_HEALTH_CACHE = "s3cret-token", 0
    bad = bad_rows()
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    good = PeriodicTask.objects.create(name="good", task="scheduling.expire_coupons",
                                       interval=every)
    token = {"HTTP_AUTHORIZATION": "Bearer s3cret-token"}
    cron = bad["sunday-as-7"].crontab_id
    pages = [CHANGELIST, "/monitoring/", "/monitoring/?status=bad",
             "/admin/django_celery_beat/crontabschedule/",
             f"/admin/django_celery_beat/crontabschedule/{cron}/change/",
             *(change_url(model) for model in [*bad.values(), good]),
             *(f"/monitoring/jobs/{model.pk}/" for model in [*bad.values(), good])]
    for url in pages:
        assert admin_client.get(url).status_code == 200, url
    for url in ("/metrics", "/health/scheduler"):
        assert client.get(url, **token).status_code in (200, 503), url
    statuses = {s.name: s for s in job_statuses(timezone.now(), outcomes=False)}
    assert statuses["zero-interval"].reason.startswith("invalid schedule:")
    assert statuses["sunday-as-7"].reason.startswith("invalid schedule:")
    assert "7 > 6" in statuses["sunday-as-7"].reason
    for name in ("list-kwargs", "unknown-keyword", "args-object", "list-headers"):
        assert statuses[name].status == "invalid"
        assert statuses[name].reason.startswith("cannot send: "), statuses[name]
    assert statuses["good"].status == "never_run"
    dashboard = admin_client.get("/monitoring/").content.decode()
    assert "cannot send: kwargs must be a JSON object, not list" in dashboard


def test_the_system_check_lists_each_bad_row(only):
    from django.core import checks

    bad_rows()
    found = {w.obj: w.msg for w in checks.run_checks() if w.id == "scheduling.W002"}
    assert set(found) == {"list-kwargs", "unknown-keyword", "args-object", "list-headers",
                          "zero-interval", "sunday-as-7"}
    assert "kwargs: kwargs must be a JSON object, not list" in found["list-kwargs"]
    assert "interval: must be positive" in found["zero-interval"]


def test_deleting_a_job_keeps_its_ledger_rows_and_dead_letters_under_its_old_name(
        admin_client, only):
    from deadletters.models import DeadLetter

    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    model = PeriodicTask.objects.create(name="old-report", task="scheduling.expire_coupons",
                                        interval=every)
    now = timezone.now()
    dispatch_many([(model, now)], now=now, by="test")
    DeadLetter.objects.create(task_id="d-1", task_name=model.task, exception_type="ValueError",
                              periodic_task_name="old-report")
    response = admin_client.post(change_url(model).replace("change", "delete"), {"post": "yes"})
    assert response.status_code == 302
    assert not PeriodicTask.objects.filter(pk=model.pk).exists()
    row = Dispatch.objects.get()
    assert (row.periodic_task_id, row.job_name, row.state) == (None, "old-report", "sent")
    assert DeadLetter.objects.filter(periodic_task_name="old-report").exists()
    ledger = admin_client.get("/admin/scheduling/dispatch/?q=old-report")
    assert ledger.status_code == 200 and "old-report" in ledger.content.decode()
    dashboard = admin_client.get("/monitoring/").content.decode()
    assert 'id="deleted-jobs"' in dashboard and "old-report" in dashboard


INLINE = {"periodictask_set-TOTAL_FORMS": "0", "periodictask_set-INITIAL_FORMS": "0"}


@pytest.mark.parametrize("fields, message", [
    ({"day_of_week": "7"}, "use 0 (or sun) for Sunday, not 7"),
    ({"day_of_week": "1-7"}, "use 0 (or sun) for Sunday, not 7"),
    ({"minute": "31", "hour": "2", "day_of_month": "30", "month_of_year": "2"},
     "day_of_month '30' never occurs in month_of_year '2'"),
    ({"hour": "25"}, "Celery cannot build this schedule"),
])
def test_the_crontab_admin_refuses_what_celery_cannot_build(admin_client, fields, message):
    from django_celery_beat.models import CrontabSchedule

    data = {"minute": "0", "hour": "3", "day_of_week": "*", "day_of_month": "*",
            "month_of_year": "*", "timezone": "UTC", **INLINE, **fields}
    response = admin_client.post("/admin/django_celery_beat/crontabschedule/add/", data)
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not CrontabSchedule.objects.filter(**fields).exists()


def test_a_valid_crontab_is_saved_and_a_sunday_written_as_0_runs_on_sunday(admin_client):
    from django_celery_beat.models import CrontabSchedule

    data = {"minute": "0", "hour": "3", "day_of_week": "0", "day_of_month": "*",
            "month_of_year": "*", "timezone": "UTC", **INLINE}
    response = admin_client.post("/admin/django_celery_beat/crontabschedule/add/", data)
    assert response.status_code == 302
    cron = CrontabSchedule.objects.get(hour="3", day_of_week="0")
    page = admin_client.get(f"/admin/django_celery_beat/crontabschedule/{cron.pk}/change/")
    assert page.content.decode().count("Sun 20") == 5  # next five runs, all on Sundays


def test_the_message_keeps_every_stored_option(only):
    from scheduling.beat import message_for

    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    model = PeriodicTask.objects.create(
        name="routed", task=FLAG, interval=every, kwargs='{"within_days": 5}', args="[]",
        queue="reports", exchange="billing", routing_key="daily", priority=7,
        headers='{"team": "billing"}', expire_seconds=30)
    slot = timezone.now()
    name, args, kwargs, options = message_for(model, slot, "scheduled")
    assert (name, args, kwargs) == (FLAG, [], {"within_days": 5})
    assert {k: options[k] for k in ("queue", "exchange", "routing_key", "priority", "expires")} \
        == {"queue": "reports", "exchange": "billing", "routing_key": "daily", "priority": 7,
            "expires": 30}
    assert options["headers"] == {"team": "billing", "periodic_task_name": "routed",
                                  "scheduled_slot": slot.isoformat(), "dispatch_kind": "scheduled",
                                  "celery_beat_task": True}


def test_an_expired_job_lists_no_next_runs(admin_client, only):
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    soon = PeriodicTask.objects.create(name="ends-soon", task="scheduling.expire_coupons",
                                       interval=every,
                                       expires=timezone.now() + dt.timedelta(seconds=150))
    gone = PeriodicTask.objects.create(name="ended", task="scheduling.expire_coupons",
                                       interval=every,
                                       expires=timezone.now() - dt.timedelta(seconds=1))
    from scheduling.beat import upcoming_runs

    assert 1 <= len(upcoming_runs(soon, timezone.now())) <= 3  # only those before expires
    assert upcoming_runs(gone, timezone.now()) == []
    page = admin_client.get(change_url(gone)).content.decode()
    assert "No future runs." in page
    listing = admin_client.get(CHANGELIST + "?q=ended").content.decode()
    assert ">expired<" in listing
