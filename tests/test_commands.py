"""seed_demo_data and ensure_admin."""

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def due_counts():
    now = timezone.now()
    return (
        Coupon.objects.due(now=now).count(),
        PaymentCard.objects.expiring(now=now, within_days=30).count(),
        CheckoutSession.objects.stale(now=now, older_than_days=7).count(),
    )


@pytest.mark.django_db
def test_demo_data_has_exactly_the_requested_due_share():
    output = command("seed_demo_data", "--coupons", "1000", "--cards", "500", "--checkouts", "300",
                     "--due-fraction", "0.2")
    assert "created 1000 coupons (200 due)" in output
    assert (Coupon.objects.count(), PaymentCard.objects.count(), CheckoutSession.objects.count()) \
        == (1000, 500, 300)
    assert due_counts() == (200, 100, 60)
    # The rest is varied: not-due coupons expire over the next day, cards later, sessions recent
    # or completed.
    assert Coupon.objects.filter(expires_at__gt=timezone.now()).count() == 800
    assert CheckoutSession.objects.filter(status="completed").exists()
    # Adding more never collides with existing coupon codes.
    command("seed_demo_data", "--coupons", "1000", "--cards", "0", "--checkouts", "0")
    assert Coupon.objects.count() == 2000


@pytest.mark.django_db
def test_demo_data_if_empty_only_seeds_once():
    command("seed_demo_data", "--coupons", "10", "--cards", "10", "--checkouts", "10", "--if-empty")
    assert "already present" in command("seed_demo_data", "--if-empty")
    assert Coupon.objects.count() == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--due-fraction", "1.5"], "--due-fraction must be between 0 and 1"),
        (["--due-fraction", "lots"], "is not a number"),
        (["--coupons", "-5"], "cannot be negative"),
        (["--cards", "many"], "is not a whole number of rows"),
    ],
)
def test_demo_data_rejects_bad_options(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("seed_demo_data", *args)


def test_demo_data_on_the_embedded_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update(VAR_DIR=str(tmp_path), DJANGO_DEBUG="1")

    def manage(*args):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    manage("migrate", "-v0")
    manage("seed_demo_data", "--coupons", "500", "--cards", "500", "--checkouts", "500",
           "--due-fraction", "0.1")
    counts = manage("shell", "-v0", "-c", "from tests.test_commands import due_counts; "
                    "print(*due_counts())")
    assert counts.split() == ["50", "50", "50"]


@pytest.mark.django_db
def test_ensure_admin_creates_one_login_and_prints_it(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    first = command("ensure_admin")
    assert "Created superuser 'admin'" in first
    password = first.rsplit(" ", 1)[1].strip()
    assert get_user_model().objects.get(username="admin").check_password(password)
    again = command("ensure_admin")
    assert f"as admin / {password}" in again
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
