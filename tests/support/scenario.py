"""Steps of the end-to-end scenario, shared by the PostgreSQL and embedded-default runs.

The PostgreSQL test calls these in its own process (on pytest-django's test database). The
embedded test runs them in a subprocess on the SQLite file, as
``python -m tests.support.scenario STEP '{"kwarg": ...}'``, which prints the step's JSON result.
"""

import json
import sys
from datetime import timedelta


def prepare(coupons: int = 40, cards: int = 40) -> dict:
    """Seed the default schedules; make expire-coupons run every second and keep
    flag-expiring-cards from firing on its own; create due coupons and cards."""
    from django.utils import timezone
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    from scheduling.billing.models import Coupon, PaymentCard
    from scheduling.engine.seeding import seed_schedules

    seed_schedules()
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    expire = PeriodicTask.objects.get(name="expire-coupons")
    expire.crontab, expire.interval = None, every_second
    expire.save()  # save() (not update) so django-celery-beat's change signal fires
    yearly, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="0", day_of_month="1", month_of_year="1", day_of_week="*", timezone="UTC"
    )
    flag = PeriodicTask.objects.get(name="flag-expiring-cards")
    flag.crontab = yearly
    flag.save()
    add_due_rows(coupons=coupons, cards=cards)
    now = timezone.now()
    return {
        "due_coupons": Coupon.objects.due(now=now).count(),
        "due_cards": PaymentCard.objects.expiring(now=now, within_days=30).count(),
    }


def add_due_rows(coupons: int = 0, cards: int = 0) -> dict:
    from django.utils import timezone

    from scheduling.billing.models import Coupon, PaymentCard

    now = timezone.now()
    start = Coupon.objects.count()
    Coupon.objects.bulk_create(
        Coupon(code=f"E2E-{start + i}", expires_at=now - timedelta(minutes=1))
        for i in range(coupons)
    )
    PaymentCard.objects.bulk_create(
        PaymentCard(
            customer_email=f"c{i}@example.com",
            brand="visa",
            last4="4242",
            exp_month=now.month,
            exp_year=now.year - 1,
        )
        for i in range(cards)
    )
    return {}


def admin_set_interval(name: str, seconds: int) -> dict:
    """Through the Django admin's change form (as a person would): move ``name`` onto an
    every-``seconds`` interval. Returns the response status and any form errors."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    user, _ = get_user_model().objects.get_or_create(
        username="e2e-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    task = PeriodicTask.objects.get(name=name)
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    data = change_form_data(page.context)
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    data.update({"interval": str(interval.pk), "crontab": "", "solar": "", "clocked": ""})
    response = client.post(url, data)
    errors = response.context["adminform"].form.errors if response.status_code == 200 else {}
    return {"status": response.status_code, "errors": json.loads(json.dumps(errors))}


def form_data(form) -> dict:
    """The POST body a browser would send for ``form`` as rendered (split date/time included)."""
    from django.forms import CheckboxInput, MultiWidget

    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        widget = field.widget
        key = form[name].html_name
        if isinstance(widget, CheckboxInput):
            if value:
                data[key] = "on"
        elif isinstance(widget, MultiWidget):
            for i, part in enumerate(widget.decompress(value)):
                data[f"{key}_{i}"] = "" if part is None else str(part)
        elif value is not None:
            data[key] = value if isinstance(value, list) else str(value)
    return data


def change_form_data(context) -> dict:
    """The whole admin change form as a browser posts it: the model form and every inline."""
    data = form_data(context["adminform"].form)
    for inline in context.get("inline_admin_formsets", ()):
        data.update(form_data(inline.formset.management_form))
        for inline_form in inline.formset.forms:
            data.update(form_data(inline_form))
    return data


def state() -> dict:
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask
    from django_celery_results.models import TaskResult

    from scheduling.billing.models import Coupon, PaymentCard

    now = timezone.now()
    flag = PeriodicTask.objects.get(name="flag-expiring-cards")
    return {
        "due_coupons": Coupon.objects.due(now=now).count(),
        "unflagged_due_cards": PaymentCard.objects.expiring(now=now, within_days=30).count(),
        "flag_schedule": str(flag.interval or flag.crontab),
        "results": sorted(
            {(r.task_name, r.periodic_task_name, r.status) for r in TaskResult.objects.all()},
            key=str,
        ),
    }


def seed() -> dict:
    from scheduling.engine.seeding import seed_schedules

    return dict(seed_schedules())


if __name__ == "__main__":
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's response.context, as in the test process
    step, kwargs = sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(globals()[step](**kwargs)))
