"""The three maintenance jobs against PostgreSQL: boundaries, idempotency, batches, bad input."""

import os
import signal
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduling.billing import tasks
from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)


def coupon(code, expires_at, **kw):
    return Coupon.objects.create(code=code, expires_at=expires_at, **kw)


def card(exp_month, exp_year, **kw):
    return PaymentCard.objects.create(
        customer_email="a@example.com", brand="visa", last4="4242",
        exp_month=exp_month, exp_year=exp_year, **kw,
    )


def flagged_pks():
    return set(
        PaymentCard.objects.filter(expiry_flagged_at__isnull=False).values_list("pk", flat=True)
    )


def checkout(status, updated_at):
    session = CheckoutSession.objects.create(customer_email="a@example.com", status=status)
    CheckoutSession.objects.filter(pk=session.pk).update(updated_at=updated_at)  # bypass auto_now
    return session.pk


# --- expire_coupons -------------------------------------------------------------------------------

@time_machine.travel(NOW, tick=False)
def test_expire_coupons_expires_due_and_leaves_the_rest():
    past = coupon("PAST", NOW - timedelta(days=1))
    exactly = coupon("EXACT", NOW)  # valid strictly before expires_at: expires at that instant
    future = coupon("FUTURE", NOW + timedelta(microseconds=1))
    two_days_ago = NOW - timedelta(days=2)
    already = coupon("DONE", two_days_ago, status="expired", expired_at=two_days_ago)

    result = tasks.expire_coupons.apply().get()

    assert result["expired"] == 2 and result["partial"] is False
    states = dict(Coupon.objects.values_list("code", "status"))
    assert states == {"PAST": "expired", "EXACT": "expired", "FUTURE": "active", "DONE": "expired"}
    for c in (past, exactly):
        c.refresh_from_db()
        assert c.expired_at == NOW  # one `now` for the whole run
    already.refresh_from_db()
    assert already.expired_at == NOW - timedelta(days=2)  # untouched
    future.refresh_from_db()
    assert future.expired_at is None


@time_machine.travel(NOW, tick=False)
def test_expire_coupons_is_idempotent():
    coupon("A", NOW - timedelta(hours=1))
    assert tasks.expire_coupons.apply().get()["expired"] == 1
    assert tasks.expire_coupons.apply().get()["expired"] == 0


# --- flag_expiring_cards --------------------------------------------------------------------------

@time_machine.travel(datetime(2026, 12, 2, 0, 0, tzinfo=UTC), tick=False)
def test_flag_cards_across_december_to_january():
    # 30 days from 2026-12-02 is 2027-01-01T00:00Z: exactly when 12/2026 stops being valid.
    december = card(12, 2026)
    january = card(1, 2027)
    expired = card(10, 2026)  # already expired and never flagged: flagged too (documented)
    flagged_before = card(11, 2026, expiry_flagged_at=datetime(2026, 10, 1, tzinfo=UTC))

    result = tasks.flag_expiring_cards.apply(kwargs={"within_days": 30}).get()

    assert result["flagged"] == 2
    flagged = flagged_pks()
    assert flagged == {december.pk, expired.pk, flagged_before.pk}
    assert january.pk not in flagged
    flagged_before.refresh_from_db()
    assert flagged_before.expiry_flagged_at == datetime(2026, 10, 1, tzinfo=UTC)


@time_machine.travel(datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC), tick=False)
def test_flag_cards_one_second_short_of_the_boundary():
    december = card(12, 2026)  # ends 2027-01-01T00:00Z, one second more than 30 days away
    assert tasks.flag_expiring_cards.apply(kwargs={"within_days": 30}).get()["flagged"] == 0
    december.refresh_from_db()
    assert december.expiry_flagged_at is None


@time_machine.travel(datetime(2027, 1, 31, 12, 0, tzinfo=UTC), tick=False)
def test_flag_cards_on_the_last_day_of_a_month():
    january = card(1, 2027)  # ends 2027-02-01, twelve hours away
    february = card(2, 2027)  # ends 2027-03-01 (29 days + 12 h away: within 30 days)
    march = card(3, 2027)  # ends 2027-04-01
    result = tasks.flag_expiring_cards.apply(kwargs={"within_days": 30}).get()
    assert result["flagged"] == 2
    assert flagged_pks() == {january.pk, february.pk}
    march.refresh_from_db()
    assert march.expiry_flagged_at is None


@time_machine.travel(NOW, tick=False)
def test_flag_cards_is_idempotent_and_keeps_first_flag_time():
    c = card(12, 2026)
    assert tasks.flag_expiring_cards.apply().get()["flagged"] == 1
    c.refresh_from_db()
    first = c.expiry_flagged_at
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        assert tasks.flag_expiring_cards.apply().get()["flagged"] == 0
    c.refresh_from_db()
    assert c.expiry_flagged_at == first == NOW


# --- delete_stale_checkouts -----------------------------------------------------------------------

@time_machine.travel(NOW, tick=False)
def test_delete_stale_checkouts_boundaries():
    seven_days = NOW - timedelta(days=7)
    stale_open = checkout("open", seven_days)  # exactly N days idle: stale
    stale_abandoned = checkout("abandoned", seven_days - timedelta(days=30))
    fresh_open = checkout("open", seven_days + timedelta(seconds=1))
    old_completed = checkout("completed", NOW - timedelta(days=365))

    result = tasks.delete_stale_checkouts.apply(kwargs={"older_than_days": 7}).get()

    assert result["deleted"] == 2
    left = set(CheckoutSession.objects.values_list("pk", flat=True))
    assert left == {fresh_open, old_completed}
    assert stale_open not in left and stale_abandoned not in left
    assert tasks.delete_stale_checkouts.apply(kwargs={"older_than_days": 7}).get()["deleted"] == 0


# --- batches --------------------------------------------------------------------------------------

@time_machine.travel(NOW, tick=False)
def test_jobs_work_in_bounded_batches(settings):
    settings.SCHEDULING_BATCH_SIZE = settings.SCHEDULING_BATCH_MAX = 3
    Coupon.objects.bulk_create(
        # Ten due rows, then ten already expired (the job must leave those alone).
        Coupon(code=f"C{i}", expires_at=NOW - timedelta(minutes=1),
               **({} if i < 10 else {"status": "expired", "expired_at": NOW}))
        for i in range(20)
    )
    with CaptureQueriesContext(connection) as queries:
        result = tasks.expire_coupons.apply().get()
    assert result["expired"] == 10
    # 3 + 3 + 3 + 1 due rows, then one empty range, after which nothing further matches.
    assert result["batches"] == 5
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 5
    # Every write is bounded by a primary-key range and re-checks the job's condition.
    assert all('"id" <=' in sql or '"id" >' in sql for sql in updates)
    assert all("status" in sql.split("WHERE", 1)[1] for sql in updates)


def test_soft_time_limit_stops_between_batches_and_keeps_committed_work(settings):
    """The prefork pool raises SoftTimeLimitExceeded from a SIGUSR1 handler; do exactly that."""
    settings.SCHEDULING_BATCH_SIZE = settings.SCHEDULING_BATCH_MAX = 20
    Coupon.objects.bulk_create(
        (Coupon(code=f"S{i}", expires_at=datetime(2020, 1, 1, tzinfo=UTC)) for i in range(40_000)),
        batch_size=5000,
    )

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGUSR1, soft_limit)
    previous_alarm = signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        result = tasks.expire_coupons.apply().get()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGUSR1, previous)

    assert result["partial"] is True
    expired = Coupon.objects.filter(status="expired").count()
    assert 0 < expired < 40_000
    # What the result reports is exactly what was committed: no half batch.
    assert result["expired"] == expired
    assert expired % 20 == 0
    # A later run finishes the rest.
    settings.SCHEDULING_BATCH_SIZE = settings.SCHEDULING_BATCH_MAX = 5000
    assert tasks.expire_coupons.apply().get()["expired"] == 40_000 - expired


@pytest.fixture
def retried():
    """The reasons of the retries Celery announces (its task_retry signal) during the test."""
    from celery import signals

    reasons = []

    def on_retry(sender=None, reason=None, **kwargs):
        reasons.append(str(reason))

    signals.task_retry.connect(on_retry, weak=False)
    yield reasons
    signals.task_retry.disconnect(on_retry)


# --- bad arguments --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("task", "kwargs", "message"),
    [
        (tasks.flag_expiring_cards, {"within_days": "abc"}, "within_days must be a whole number"),
        (tasks.flag_expiring_cards, {"within_days": -1}, "within_days must be between 0 and"),
        (tasks.flag_expiring_cards, {"within_days": True}, "within_days must be a whole number"),
        (tasks.flag_expiring_cards, {"within_days": 1.5}, "within_days must be a whole number"),
        (tasks.delete_stale_checkouts, {"older_than_days": 0}, "older_than_days must be between 1"),
        (tasks.delete_stale_checkouts, {"older_than_days": "7"}, "older_than_days must be a whole"),
    ],
)
def test_bad_arguments_fail_at_once_and_are_not_retried(task, kwargs, message, retried):
    outcome = task.apply(kwargs=kwargs)
    assert outcome.failed()
    assert isinstance(outcome.result, tasks.InvalidJobArguments)
    assert message in str(outcome.result)
    assert outcome.traceback
    assert retried == []  # failed on the first attempt, with no retry in between


def test_unknown_argument_is_rejected_before_sending():
    with pytest.raises(TypeError):
        tasks.flag_expiring_cards.apply_async(kwargs={"within_dayz": 30})


@time_machine.travel(NOW, tick=False)
def test_a_transient_database_error_in_one_batch_is_retried_and_the_run_succeeds(
    monkeypatch, retried, settings
):
    """The second batch of the first attempt loses its connection: the run is retried (autoretry
    with backoff) and the retry expires the rest; the first batch's commit is kept."""
    from django.db import OperationalError

    from scheduling.billing import models as billing_models

    settings.SCHEDULING_BATCH_SIZE = settings.SCHEDULING_BATCH_MAX = 10
    Coupon.objects.bulk_create(
        Coupon(code=f"C{i}", expires_at=NOW - timedelta(days=1)) for i in range(25))
    real = billing_models.run_in_batches
    batches = []

    def failing_once(queryset, apply, **options):
        def flaky(chunk):
            batches.append(len(batches))
            if len(batches) == 2:
                raise OperationalError("server closed the connection unexpectedly")
            return apply(chunk)

        return real(queryset, flaky, **options)

    monkeypatch.setattr(billing_models, "run_in_batches", failing_once)
    outcome = tasks.expire_coupons.apply()

    assert outcome.successful(), outcome.traceback
    assert len(retried) == 1 and "server closed the connection" in retried[0]
    assert outcome.result["expired"] == 15  # the retry's count: 10 were expired by attempt 1
    assert Coupon.objects.filter(status="expired").count() == 25
    for task in (tasks.expire_coupons, tasks.flag_expiring_cards, tasks.delete_stale_checkouts):
        assert task.acks_late and task.reject_on_worker_lost
        assert task.autoretry_for == tasks.JOB_OPTIONS["autoretry_for"]
        assert task.retry_backoff and task.max_retries == 5


@time_machine.travel(NOW, tick=False)
def test_sparse_due_rows_skip_empty_key_ranges(settings):
    settings.SCHEDULING_BATCH_SIZE = settings.SCHEDULING_BATCH_MAX = 10
    rows = [Coupon(code="FIRST", expires_at=NOW - timedelta(days=1))]
    rows += [Coupon(code=f"LATER{i}", expires_at=NOW + timedelta(days=1)) for i in range(1000)]
    rows += [Coupon(code="LAST", expires_at=NOW - timedelta(days=1))]
    Coupon.objects.bulk_create(rows)
    result = tasks.expire_coupons.apply().get()
    assert result["expired"] == 2
    assert result["batches"] <= 3  # not one per ten keys across the 1,000-row gap


def test_batch_size_adapts_to_how_long_batches_take():
    from scheduling.billing.batching import run_in_batches

    Coupon.objects.bulk_create(
        Coupon(code=f"A{i}", expires_at=datetime(2020, 1, 1, tzinfo=UTC)) for i in range(3000)
    )
    sizes = []
    clock = [0.0]  # seconds, moved by each batch: 1 ms, except the fifth takes 30 ms

    def apply(chunk):
        changed = chunk.update(status="expired", expired_at=NOW)
        sizes.append(changed)
        clock[0] += 0.03 if len(sizes) == 5 else 0.001
        return changed

    result = run_in_batches(Coupon.objects.filter(status="active"), apply, batch_size=10,
                            max_batch_size=160, target_seconds=0.02, clock=lambda: clock[0])
    assert result.changed == 3000
    # Fast batches double up to the cap; a slow one halves the next.
    assert sizes[:6] == [10, 20, 40, 80, 160, 80]
    assert sizes[6] == 160 and max(sizes) == 160
