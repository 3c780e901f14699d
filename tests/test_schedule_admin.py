"""The schedule admin: registered tasks only, next runs, run now / pause / resume behind their
permissions, every change recorded; and the system checks."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import checks
from django.test import override_settings
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from scheduling.beat import Dispatch, JobPolicy, ScheduleChange
from tests.support.scenario import change_form_data

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/django_celery_beat/periodictask/"


def change_url(task):
    return f"{CHANGELIST}{task.pk}/change/"


@pytest.fixture
def job():
    return PeriodicTask.objects.get(name="flag-expiring-cards")


@pytest.fixture
def operator(client):
    """Staff who may view schedules, run them now and pause them, but not edit them."""
    user = get_user_model().objects.create_user("operator", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        codename__in=["view_periodictask", "run_job_now", "pause_job"]))
    client.force_login(user)
    return client


def post_edit(client, periodic, **changes):
    data = change_form_data(client.get(change_url(periodic)).context)
    data.update(changes)
    return client.post(change_url(periodic), data)


def test_unknown_task_name_is_a_validation_error(admin_client, job):
    response = post_edit(admin_client, job, task="scheduling.no_such_task")
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Unknown task 'scheduling.no_such_task'" in errors["task"][0]
    job.refresh_from_db()
    assert job.task == "scheduling.flag_expiring_cards"


def test_task_field_offers_only_registered_names(admin_client, job):
    form = admin_client.get(change_url(job)).context["adminform"].form
    offered = {value for value, _ in form.fields["task"].widget.choices if value}
    assert {"scheduling.expire_coupons", "celery.backend_cleanup"} <= offered
    assert "scheduling.no_such_task" not in offered


def test_a_change_is_recorded_with_who_and_the_field_diff(admin_client, superuser, job):
    response = post_edit(admin_client, job, kwargs='{"within_days": 45}')
    assert response.status_code == 302
    change = ScheduleChange.objects.get(action="changed")
    assert change.changed_by == superuser
    assert change.changes == {"kwargs": ['{"within_days": 30}', '{"within_days": 45}']}
    assert change.periodic_task == job


def test_policy_edit_is_recorded_too(admin_client, job):
    response = post_edit(admin_client, job, **{"policy-0-catch_up_window": "120"})
    assert response.status_code == 302
    assert JobPolicy.objects.get(periodic_task=job).catch_up_window == 120
    change = ScheduleChange.objects.get(action="changed")
    assert change.changes == {"policy.catch_up_window": [None, 120]}


def test_next_runs_are_shown_in_the_crontab_timezone(admin_client, job):
    CrontabSchedule.objects.filter(pk=job.crontab_id).update(timezone="Europe/Berlin")
    page = admin_client.get(change_url(job)).content.decode()
    assert page.count(" CET") + page.count(" CEST") >= 5
    assert "Next five runs" in page
    crontab_page = admin_client.get(
        f"/admin/django_celery_beat/crontabschedule/{job.crontab_id}/change/").content.decode()
    assert "0 = Sunday" in crontab_page and "CET" in crontab_page


def test_a_crontab_in_a_dst_gap_is_flagged(admin_client):
    # 02:30 on the last Sunday of March: every year, the wall time Berlin skips.
    cron = CrontabSchedule.objects.create(minute="30", hour="2", day_of_month="25-31",
                                          month_of_year="3", day_of_week="0",
                                          timezone="Europe/Berlin")
    page = admin_client.get(
        f"/admin/django_celery_beat/crontabschedule/{cron.pk}/change/").content.decode()
    assert page.count("daylight-saving gap") == 5
    assert "03:30 CEST" in page


def test_view_only_staff_get_no_actions_and_a_forged_post_does_nothing(view_only_client, job):
    page = view_only_client.get(CHANGELIST)
    assert page.status_code == 200
    assert page.context["action_form"] is None
    assert b"Run selected" not in page.content and b"run_now" not in page.content
    for action in ("run_now", "pause", "run_tasks", "disable_tasks"):
        response = view_only_client.post(CHANGELIST, {
            "action": action, "_selected_action": [job.pk], "index": 0, "reason": "x",
            "confirm": "yes"})
        # The changelist again, with no action offered and nothing done (Django ignores an
        # action the user may not run).
        assert response.status_code == 200, action
        assert response.context["action_form"] is None, action
        assert not list(response.context["messages"]), action
    job.refresh_from_db()
    assert job.enabled
    assert not Dispatch.objects.exists()
    assert not ScheduleChange.objects.exists()


def test_run_now_sends_through_the_ledger_as_a_manual_run(
    operator, job, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(CHANGELIST, {
            "action": "run_now", "_selected_action": [job.pk], "index": 0})
    assert response.status_code == 302
    row = Dispatch.objects.get()
    assert (row.kind, row.state, row.periodic_task_id) == ("manual", "sent", job.pk)
    assert row.dispatched_by == "admin:operator"
    assert ScheduleChange.objects.get().action == "run_now"


def test_pause_asks_why_then_records_who_and_why_and_resume_likewise(operator, job):
    form = {"action": "pause", "_selected_action": [job.pk], "index": 0}
    page = operator.post(CHANGELIST, form)
    assert page.status_code == 200 and b"reason" in page.content  # the intermediate page
    job.refresh_from_db()
    assert job.enabled

    empty = operator.post(CHANGELIST, {**form, "confirm": "yes", "reason": ""})
    assert empty.status_code == 200 and b"This field is required" in empty.content

    done = operator.post(CHANGELIST, {**form, "confirm": "yes", "reason": "card processor outage"})
    assert done.status_code == 302
    job.refresh_from_db()
    policy = JobPolicy.objects.get(periodic_task=job)
    assert not job.enabled
    assert (policy.paused_by.username, policy.pause_reason) == ("operator", "card processor outage")

    again = operator.post(CHANGELIST, {**form, "confirm": "yes", "reason": "twice"})
    assert again.status_code == 302
    assert ScheduleChange.objects.filter(action="paused").count() == 1  # compare-and-set

    operator.post(CHANGELIST, {**form, "action": "resume", "confirm": "yes", "reason": "fixed"})
    job.refresh_from_db()
    policy.refresh_from_db()
    assert job.enabled and policy.resume_reason == "fixed"
    assert list(ScheduleChange.objects.order_by("changed_at").values_list("action", "reason")) == [
        ("paused", "card processor outage"), ("resumed", "fixed")]


def test_the_enabled_checkbox_is_read_only_so_pausing_goes_through_the_action(admin_client, job):
    response = post_edit(admin_client, job)  # the form has no enabled field to untick
    assert response.status_code == 302
    assert "enabled" not in admin_client.get(change_url(job)).context["adminform"].form.fields


def test_stock_actions_are_gone(admin_client):
    page = admin_client.get(CHANGELIST)
    offered = [name for name, _ in page.context["action_form"].fields["action"].choices]
    assert offered == ["", "delete_selected", "run_now", "pause", "resume"]
    assert "run_tasks" not in page.content.decode() and "toggle_tasks" not in page.content.decode()


def ids(messages):
    return sorted(m.id for m in messages)


def test_checks_pass_on_the_project_settings():
    assert ids(checks.run_checks(tags=None)) == []


@override_settings(CELERY_BEAT_SCHEDULE={"x": {"task": "scheduling.expire_coupons"}})
def test_check_rejects_a_beat_schedule_in_settings():
    assert "scheduling.E001" in ids(checks.run_checks())


@override_settings(CELERY_BEAT_SCHEDULER="django_celery_beat.schedulers:DatabaseScheduler")
def test_check_rejects_another_scheduler():
    assert "scheduling.E002" in ids(checks.run_checks())


@override_settings(TIME_ZONE="Europe/Berlin")
def test_check_rejects_a_non_utc_time_zone():
    assert "scheduling.E003" in ids(checks.run_checks())


def test_check_warns_about_an_enabled_job_naming_an_unregistered_task(job):
    PeriodicTask.objects.filter(pk=job.pk).update(task="scheduling.gone")
    warnings = [m for m in checks.run_checks() if m.id == "scheduling.W001"]
    assert len(warnings) == 1 and "scheduling.gone" in warnings[0].msg
    PeriodicTask.objects.filter(pk=job.pk).update(enabled=False)
    assert "scheduling.W001" not in ids(checks.run_checks())


