"""The billing rows and the schedules in the Django admin."""

import re
from datetime import UTC, datetime

import pytest

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard

pytestmark = pytest.mark.django_db


@pytest.fixture
def rows():
    Coupon.objects.create(code="WELCOME10", expires_at=datetime(2027, 1, 1, tzinfo=UTC))
    PaymentCard.objects.create(customer_email="ada@example.com", brand="visa", last4="4242",
                               exp_month=12, exp_year=2026)
    CheckoutSession.objects.create(customer_email="ada@example.com")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/admin/scheduling/coupon/?q=WELCOME", "WELCOME10"),
        ("/admin/scheduling/coupon/?status__exact=active", "WELCOME10"),
        ("/admin/scheduling/paymentcard/?q=ada@example.com", "4242"),
        ("/admin/scheduling/paymentcard/?expiry_flagged_at__isempty=1", "ada@example.com"),
        ("/admin/scheduling/checkoutsession/?status__exact=open", "ada@example.com"),
        ("/admin/django_celery_beat/periodictask/", "expire-coupons"),
    ],
)
def test_changelists_filter_and_search(admin_client, rows, url, expected):
    response = admin_client.get(url)
    assert response.status_code == 200
    assert expected in response.content.decode()


def test_search_that_matches_nothing_shows_nothing(admin_client, rows):
    response = admin_client.get("/admin/scheduling/coupon/?q=NOPE")
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
    assert "WELCOME10" not in response.content.decode()


def test_view_only_staff_cannot_change_a_schedule(view_only_client):
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(name="expire-coupons")
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    assert view_only_client.get(url).status_code == 200
    response = view_only_client.post(url, {"name": "hijacked", "enabled": ""})
    assert response.status_code == 403
    task.refresh_from_db()
    assert task.name == "expire-coupons" and task.enabled


@pytest.mark.parametrize("last4", ["4242424242424242", "42a4", "424"])
def test_card_number_is_never_more_than_last_four(last4):
    from django.db import DataError, IntegrityError, transaction

    with pytest.raises((IntegrityError, DataError)), transaction.atomic():
        PaymentCard.objects.create(customer_email="a@example.com", brand="visa",
                                   last4=last4, exp_month=1, exp_year=2027)


def stylesheets(html: str) -> list[str]:
    return re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)


def test_the_admin_is_styled_with_production_settings(client):
    """DEBUG off, as in production: every stylesheet the login page links is served (WhiteNoise,
    hashed names from the collected manifest), with the right type and a long cache lifetime."""
    page = client.get("/admin/login/")
    assert page.status_code == 200
    links = stylesheets(page.content.decode())
    hashed = r"/static/admin/css/base\.[0-9a-f]{12}\.css"
    assert any(re.fullmatch(hashed, link) for link in links), links
    for link in links:
        response = client.get(link)
        assert response.status_code == 200, link
        assert response["Content-Type"].startswith("text/css"), link
        assert "max-age=315360000" in response["Cache-Control"], link  # hashed: immutable
        assert b"{" in b"".join(response.streaming_content)
