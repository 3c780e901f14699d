"""Schedules are data: seeded once from scheduling/schedules.py, never re-imposed over edits."""

import json

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

from scheduling.billing.tasks import expire_coupons  # noqa: F401  (registers the tasks)
from scheduling.schedules import DEFAULT_SCHEDULES

pytestmark = pytest.mark.django_db


def seed(*args):
    from io import StringIO

    out = StringIO()
    call_command("seed_schedules", *args, stdout=out)
    return out.getvalue()


def test_migration_seeded_every_default_schedule():
    for default in DEFAULT_SCHEDULES:
        task = PeriodicTask.objects.get(name=default.name)
        assert task.task == default.task and task.enabled
        assert json.loads(task.kwargs) == default.kwargs
        assert str(task.crontab.timezone) == "UTC"
        for field, value in default.crontab.items():
            assert getattr(task.crontab, field) == value


def test_seed_is_idempotent():
    before = list(PeriodicTask.objects.order_by("pk").values())
    crontabs = CrontabSchedule.objects.count()
    assert "0 created, 0 restored, 7 kept as they are" in seed()
    assert "0 created, 0 restored, 7 kept as they are" in seed()
    assert list(PeriodicTask.objects.order_by("pk").values()) == before
    assert CrontabSchedule.objects.count() == crontabs


def test_seed_recreates_a_missing_schedule_and_tells_the_running_beat():
    PeriodicTask.objects.filter(name="expire-coupons").delete()
    changed_before = PeriodicTasks.last_change()
    output = seed()
    assert "created  expire-coupons" in output
    assert "1 created, 0 restored, 6 kept" in output
    assert PeriodicTask.objects.filter(name="expire-coupons").exists()
    assert PeriodicTasks.last_change() > changed_before


def test_admin_edit_survives_reseed_and_restore_puts_the_default_back(admin_client):
    task = PeriodicTask.objects.get(name="flag-expiring-cards")
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    from tests.support.scenario import change_form_data

    data = change_form_data(admin_client.get(url).context)
    data["kwargs"] = '{"within_days": 60}'
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    assert "kept  flag-expiring-cards" in seed()
    task.refresh_from_db()
    assert json.loads(task.kwargs) == {"within_days": 60}

    assert "restored  flag-expiring-cards" in seed("--restore", "flag-expiring-cards")
    task.refresh_from_db()
    assert json.loads(task.kwargs) == {"within_days": 30}


def test_restore_of_an_unknown_name_is_a_clear_error():
    with pytest.raises(CommandError, match="no default schedule named nope; declared: "):
        seed("--restore", "nope")
