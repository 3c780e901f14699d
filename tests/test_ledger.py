"""The worker side of the dispatch ledger (scheduling/ledger.py), through its signal handlers:
a run's end is one update; a message delivered again after it succeeded adds its counts."""

import datetime as dt
from types import SimpleNamespace

import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from scheduling.beat import Dispatch
from scheduling.engine import ledger

pytestmark = pytest.mark.django_db
SLOT = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def row():
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="seconds")
    task = PeriodicTask.objects.create(name="every-10s", task="scheduling.expire_coupons",
                                       interval=every)
    return Dispatch.objects.create(periodic_task=task, slot=SLOT, task_id="t-1",
                                   task_name=task.task, state=Dispatch.State.SENT)


def run(task_id="t-1"):
    """What Celery passes as ``sender``: the task, its request carrying beat's headers."""
    sender = SimpleNamespace(request=SimpleNamespace(id=task_id, scheduled_slot=SLOT.isoformat()))
    ledger.on_task_prerun(task_id=task_id, task=sender)
    return sender


def test_a_run_that_succeeds_records_its_counts(row):
    ledger.on_task_success(sender=run(), result={"job": "expire_coupons", "expired": 10,
                                                 "partial": False, "rows": [1, 2]})
    row.refresh_from_db()
    assert row.state == Dispatch.State.SUCCEEDED
    assert row.result == {"job": "expire_coupons", "expired": 10, "partial": False}
    assert row.started_at is not None and row.finished_at >= row.started_at


def test_a_message_delivered_again_after_success_adds_its_counts(row):
    ledger.on_task_success(sender=run(), result={"expired": 10, "batches": 3, "partial": False})
    # Redis lost the acknowledgement and delivered the message again; that run found 4 more.
    ledger.on_task_success(sender=run(), result={"expired": 4, "batches": 1, "partial": True})
    row.refresh_from_db()
    assert row.state == Dispatch.State.SUCCEEDED
    assert row.result == {"expired": 14, "batches": 4, "partial": True, "runs": 2}
    # ... and a third delivery that fails does not undo the work the others did.
    ledger.on_task_failure(sender=run(), task_id="t-1")
    row.refresh_from_db()
    assert (row.state, row.result["expired"]) == (Dispatch.State.SUCCEEDED, 14)


def test_a_failed_run_is_marked_failed_and_a_later_success_overrides_it(row):
    ledger.on_task_failure(sender=run(), task_id="t-1")
    row.refresh_from_db()
    assert row.state == Dispatch.State.FAILED
    ledger.on_task_success(sender=run(), result={"expired": 2})
    row.refresh_from_db()
    assert (row.state, row.result) == (Dispatch.State.SUCCEEDED, {"expired": 2})


def test_a_failed_ledger_write_is_logged_with_the_runs_error_and_raises_nothing(
        row, monkeypatch):
    from django.db import OperationalError
    from structlog.testing import capture_logs

    def broken(*args, **kwargs):
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(Dispatch.objects, "filter", broken)
    with capture_logs() as logs:
        ledger.on_task_failure(task_id=row.task_id, exception=ValueError("boom"))
    entry = next(e for e in logs if e["event"] == "ledger.write_failed")
    assert entry["error"] == "the database system is shutting down"
    assert entry["run_error"] == "ValueError: boom"


def test_each_committed_batch_adds_its_rows_to_the_run_a_rolled_back_one_does_not(row):
    """Progress is written inside each batch's transaction: a run killed mid-batch has counted
    exactly the rows its committed batches changed."""
    from django.utils import timezone

    from scheduling.billing.batching import run_in_batches
    from scheduling.billing.models import Coupon

    now = timezone.now()
    Coupon.objects.bulk_create([Coupon(code=f"P{i}", expires_at=now - dt.timedelta(days=1))
                                for i in range(25)])
    add = ledger.progress_writer(run().request)
    batches = []

    def apply(chunk):
        changed = chunk.update(status=Coupon.Status.EXPIRED, expired_at=now)
        batches.append(changed)
        if len(batches) == 3:
            raise RuntimeError("the worker died in the third batch")
        return changed

    with pytest.raises(RuntimeError):
        run_in_batches(Coupon.objects.due(now=now), apply, batch_size=10, in_batch=add)
    row.refresh_from_db()
    assert Coupon.objects.filter(status="expired").count() == 20
    assert (row.rows_done, row.batches_done) == (20, 2)
    assert row.progress_at is not None and row.started_at is not None
    # The redelivered attempt finishes the work: the row counts every attempt's rows.
    Coupon.objects.expire_due(now=now, batch_size=10, in_batch=add)
    row.refresh_from_db()
    assert (row.rows_done, row.batches_done) == (25, 3)


def test_a_task_that_was_not_scheduled_writes_no_progress():
    assert ledger.progress_writer(SimpleNamespace(id="x")) is None
    assert ledger.progress_writer(None) is None
