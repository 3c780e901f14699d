"""The success-centric status at a fixed ``now``: each stage the precedence names, the worker
registry's part in it, lost runs, and a query count that does not grow with the number of jobs."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from monitoring.status import PRECEDENCE, Status, job_status, job_statuses
from scheduling.beat import Dispatch, WorkerProcess
from scheduling.engine import ledger

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def every(seconds):
    return IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")[0]


def job(name, seconds=60, task="scheduling.expire_coupons", anchor=None, **fields):
    model = PeriodicTask.objects.create(name=name, task=task, interval=every(seconds), **fields)
    PeriodicTask.objects.filter(pk=model.pk).update(date_changed=anchor or NOW - dt.timedelta(
        seconds=seconds // 2))
    return PeriodicTask.objects.get(pk=model.pk)


def row(model, slot, state="succeeded", **fields):
    return Dispatch.objects.create(
        periodic_task=model, slot=slot, state=state, task_id=f"{model.pk}-{slot.isoformat()}",
        task_name=model.task, dispatched_at=slot,
        started_at=slot if state in ("succeeded", "failed") else None,
        finished_at=slot + dt.timedelta(seconds=1) if state in ("succeeded", "failed") else None,
        **fields)


def test_the_precedence_is_one_ordered_list_of_statuses():
    assert [status for status, _ in PRECEDENCE][:5] == [
        Status.EXPIRED, Status.PAUSED, Status.INVALID, Status.INVALID, Status.LATE]
    assert set(status for status, _ in PRECEDENCE) | {Status.OK} == set(Status)


def test_a_queue_nobody_consumes_is_red_before_any_run_is_late(only, live_worker):
    model = job("reports", queue="reports")
    status = job_status(model, NOW)
    assert (status.status, status.cause) == ("queued", "route")
    assert status.reason == (
        "no live worker consumes queue 'reports': start a worker with -Q reports")
    live_worker("w2@test", queues=("reports",))
    assert job_status(model, NOW).status == "never_run"


def test_an_unregistered_task_and_an_unbound_exchange_are_named(only, live_worker):
    unknown = job("ghost", task="billing.no_such_task")
    assert job_status(unknown, NOW).reason == (
        "task 'billing.no_such_task' is not registered on any live worker consuming queue 'celery'")
    routed = job("routed", exchange="reports", routing_key="daily")
    reason = job_status(routed, NOW).reason
    assert reason.startswith("message is not routed to any queue") and "'daily'" in reason
    WorkerProcess.objects.update(queues=[
        {"name": "celery", "exchange": "celery", "type": "direct", "routing_key": "celery"},
        {"name": "r", "exchange": "reports", "type": "topic", "routing_key": "weekly"}])
    assert job_status(routed, NOW).status == "queued"  # bound with another key
    WorkerProcess.objects.update(queues=[
        {"name": "r", "exchange": "reports", "type": "topic", "routing_key": "*"}])
    assert job_status(routed, NOW).status == "never_run"


def test_a_worker_gone_without_a_clean_stop_drops_out_after_the_stale_bound(
        only, live_worker, settings):
    model = job("j")
    WorkerProcess.objects.update(last_seen_at=timezone.now() - dt.timedelta(
        seconds=settings.SCHEDULING_WORKER_STALE + 1))
    assert "no live worker consumes queue 'celery'" in job_status(model, timezone.now()).reason
    WorkerProcess.objects.update(last_seen_at=timezone.now(), stopped_at=timezone.now())
    assert job_status(model, timezone.now()).status == "queued"


def test_a_run_on_a_dead_worker_is_marked_lost_and_the_job_is_red_until_a_success(
        only, live_worker, settings):
    model = job("j", seconds=60)
    run = row(model, NOW - dt.timedelta(seconds=20), state="sent")
    TaskResult.objects.create(task_id=run.task_id, status="STARTED", worker="dead@test",
                              date_started=NOW - dt.timedelta(seconds=19))
    assert job_status(model, NOW).status == "running"
    assert ledger.mark_lost(NOW) == 0  # the worker is not in the registry: not known dead
    live_worker("dead@test")
    WorkerProcess.objects.filter(hostname="dead@test").update(stopped_at=NOW)
    assert ledger.mark_lost(NOW) == 1
    lost = job_status(model, NOW)
    assert lost.status == "lost" and "dead@test that ran it is gone (stopped)" in lost.reason
    assert not Dispatch.objects.unfinished().exists()  # the overlap policy stops waiting
    row(model, NOW + dt.timedelta(seconds=40))
    WorkerProcess.objects.filter(hostname="w1@test").update(
        last_seen_at=NOW + dt.timedelta(seconds=41))  # still refreshing its row
    after = job_status(model, NOW + dt.timedelta(seconds=41))
    assert after.status == "ok", after.reason


def test_a_run_never_started_past_the_hard_limit_is_lost(only, live_worker, settings):
    model = job("j", seconds=3600, anchor=NOW - dt.timedelta(hours=2))
    limit = settings.CELERY_TASK_TIME_LIMIT + settings.SCHEDULING_LOST_GRACE
    row(model, NOW - dt.timedelta(seconds=limit + 5), state="sent")
    assert job_status(model, NOW).status == "queued"
    assert ledger.mark_lost(NOW) == 1
    assert "not started within the hard time limit" in job_status(model, NOW).reason


def test_a_sent_row_whose_result_was_stored_takes_its_outcome(only, live_worker):
    """The worker's ledger write failed (the database went away between the result and the
    ledger): beat's check settles the row from the stored result instead of calling it lost."""
    model = job("j", seconds=60)
    done = row(model, NOW - dt.timedelta(seconds=50), state="sent")
    TaskResult.objects.create(task_id=done.task_id, status="SUCCESS",
                              result='{"expired": 7, "batches": 2}',
                              date_started=NOW - dt.timedelta(seconds=49),
                              date_done=NOW - dt.timedelta(seconds=48))
    failed = row(model, NOW - dt.timedelta(seconds=20), state="sent")
    TaskResult.objects.create(
        task_id=failed.task_id, status="FAILURE",
        result='{"exc_type": "ValueError", "exc_message": ["bad input"]}',
        date_done=NOW - dt.timedelta(seconds=19))
    assert ledger.mark_lost(NOW) == 0
    done.refresh_from_db()
    failed.refresh_from_db()
    assert (done.state, done.result) == ("succeeded", {"expired": 7, "batches": 2})
    assert (failed.state, failed.error) == ("failed", "ValueError: bad input")
    assert not Dispatch.objects.unfinished().exists()


def test_an_expired_message_and_missed_slots_are_told_apart(only, live_worker):
    model = job("j", seconds=60, anchor=NOW - dt.timedelta(hours=1))
    row(model, NOW - dt.timedelta(seconds=30), state="expired",
        error="the message expired before a worker took it")
    status = job_status(model, NOW)
    assert status.status == "queued" and "message expired before a worker took it" in status.reason
    # A newer run still waiting does not hide it: red until a run succeeds.
    row(model, NOW - dt.timedelta(seconds=2), state="sent")
    assert "message expired" in job_status(model, NOW).reason
    row(model, NOW - dt.timedelta(seconds=1))
    assert job_status(model, NOW).status == "ok"
    # Slots recorded as missed keep it red until a run succeeds: nothing did the work.
    other = job("k", seconds=60, anchor=NOW - dt.timedelta(hours=2))
    row(other, NOW - dt.timedelta(hours=1, minutes=59))
    Dispatch.objects.create(periodic_task=other, slot=NOW - dt.timedelta(seconds=30),
                            kind="missed", state="not_sent", task_name=other.task,
                            missed_from=NOW - dt.timedelta(hours=1, minutes=58), missed_count=118)
    missed = job_status(other, NOW)
    assert missed.status == "missed" and "no run has succeeded since" in missed.reason


def test_bad_rows_made_outside_the_admin_are_invalid_and_harm_no_other_job(only, live_worker):
    broken = job("zero", seconds=60)
    IntervalSchedule.objects.filter(pk=broken.interval_id).update(every=0)
    healthy = job("healthy", seconds=30)
    row(healthy, NOW - dt.timedelta(seconds=10))
    statuses = {s.name: s for s in job_statuses(NOW)}
    assert statuses["zero"].status == "invalid"
    assert "the interval must be positive" in statuses["zero"].reason
    assert statuses["healthy"].status == "ok"


def test_an_expired_job_is_not_red(only, live_worker):
    model = job("old", expires=NOW - dt.timedelta(minutes=5), anchor=NOW - dt.timedelta(hours=1))
    assert job_status(model, NOW).status == "expired"


def _jobs(n):
    interval = every(60)
    PeriodicTask.objects.bulk_create([
        PeriodicTask(name=f"bulk-{i:04d}", task="scheduling.expire_coupons", interval=interval,
                     kwargs="{}") for i in range(n)])
    models = list(PeriodicTask.objects.filter(name__startswith="bulk-"))
    Dispatch.objects.bulk_create([
        Dispatch(periodic_task=m, slot=NOW - dt.timedelta(minutes=k), state=state,
                 task_id=f"{m.pk}-{k}", task_name=m.task, dispatched_at=NOW,
                 started_at=NOW, finished_at=NOW)
        for m in models for k, state in ((1, "succeeded"), (2, "failed"), (3, "succeeded"))])


@pytest.mark.parametrize("count", [10, 200])
def test_the_number_of_queries_does_not_grow_with_the_jobs(only, live_worker, count):
    _jobs(count)
    with CaptureQueriesContext(connection) as queries:
        statuses = job_statuses(NOW, outcomes=False)
    assert len(statuses) == count
    assert len(queries) == 4, [q["sql"][:120] for q in queries]


def test_a_dropped_message_older_than_a_success_does_not_hold_the_job_red(only, live_worker):
    model = job("j", seconds=600, anchor=NOW - dt.timedelta(hours=1))
    row(model, NOW - dt.timedelta(minutes=5), state="sent")  # dropped: never starts
    assert job_status(model, NOW).status == "queued"
    row(model, NOW - dt.timedelta(seconds=30))  # a later run did the work
    assert job_status(model, NOW).status == "ok"
    row(model, NOW - dt.timedelta(seconds=10), state="sent")  # waiting, within the grace
    assert job_status(model, NOW).status == "ok"
    WorkerProcess.objects.update(last_seen_at=NOW + dt.timedelta(minutes=3))
    late = job_status(model, NOW + dt.timedelta(minutes=3))
    assert late.status == "queued" and "not started" in late.reason


def test_metrics_carry_each_jobs_status_stage_and_the_workers_per_queue(
        only, live_worker, client, settings):
    from prometheus_client.parser import text_string_to_metric_families

    settings.HEALTH_TOKEN, settings.MONITORING_HEALTH_CACHE = "s3cret-token", 0
    job("reports", queue="reports")
    done = job("done", seconds=600, anchor=timezone.now() - dt.timedelta(minutes=15))
    row(done, timezone.now() - dt.timedelta(minutes=5))
    lost = job("gone", seconds=600)
    row(lost, timezone.now() - dt.timedelta(minutes=1), state="lost", error="worker gone")
    live_worker("w2@test", queues=("celery", "other"))
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("billing_job_stage", (("job", "reports"), ("stage", "queued")))] == 1
    assert samples[("billing_job_stage", (("job", "gone"), ("stage", "lost")))] == 1
    assert samples[("billing_job_status", (("job", "done"), ("status", "ok")))] == 1
    assert samples[("billing_job_status", (("job", "done"), ("status", "late")))] == 0
    assert sum(v for (name, labels), v in samples.items()
               if name == "billing_job_status" and ("job", "done") in labels) == 1
    assert ("billing_job_last_success_timestamp_seconds", (("job", "done"),)) in samples
    assert samples[("billing_runs_lost", ())] == 1
    assert samples[("billing_workers", (("queue", "celery"),))] == 2
    assert samples[("billing_workers", (("queue", "other"),))] == 1
    assert samples[("billing_workers_online", ())] == 2


def test_the_pages_cost_the_same_number_of_queries_at_10_and_60_jobs(
        only, live_worker, admin_client, settings):
    settings.HEALTH_TOKEN, settings.MONITORING_HEALTH_CACHE = "s3cret-token", 0
    token = {"HTTP_AUTHORIZATION": "Bearer s3cret-token"}
    pages = {"admin list": lambda: admin_client.get("/admin/django_celery_beat/periodictask/"),
             "dashboard": lambda: admin_client.get("/monitoring/"),
             "metrics": lambda: admin_client.get("/metrics", **token)}

    def counts():
        found = {}
        for name, get in pages.items():
            with CaptureQueriesContext(connection) as queries:
                assert get().status_code == 200, name
            found[name] = len(queries)
        return found

    _jobs(10)
    at_10 = counts()
    interval = every(60)
    for i in range(50):
        model = PeriodicTask.objects.create(name=f"more-{i:03d}", task="tests.noop",
                                            interval=interval)
        row(model, NOW - dt.timedelta(minutes=1))
    assert counts() == at_10


def test_every_kind_of_job_has_a_defined_status(only, live_worker):
    from django_celery_beat.models import ClockedSchedule, CrontabSchedule

    paused = job("paused", enabled=False)
    soon = ClockedSchedule.objects.create(clocked_time=NOW + dt.timedelta(hours=1))
    one_off = PeriodicTask.objects.create(name="one-off", task="scheduling.expire_coupons",
                                          clocked=soon, one_off=True)
    done = ClockedSchedule.objects.create(clocked_time=NOW - dt.timedelta(hours=1))
    ran = PeriodicTask.objects.create(name="ran-once", task="scheduling.expire_coupons",
                                      clocked=done, one_off=True)
    row(ran, done.clocked_time)
    york = CrontabSchedule.objects.create(minute="0", hour="*", timezone="America/New_York")
    hourly = PeriodicTask.objects.create(name="ny-hourly", task="monitoring.prune_run_records",
                                         crontab=york)
    PeriodicTask.objects.filter(pk=hourly.pk).update(date_changed=NOW - dt.timedelta(hours=3))
    last_hour = NOW.replace(minute=0, second=0)
    row(hourly, last_hour - dt.timedelta(hours=1))
    row(hourly, last_hour)
    later = job("starts-later", seconds=60, start_time=NOW + dt.timedelta(hours=2))
    found = {s.name: s for s in job_statuses(NOW, outcomes=False)}
    assert found[paused.name].status == "paused"
    assert found[one_off.name].status == "never_run"
    assert found[one_off.name].next_run == soon.clocked_time
    assert found[ran.name].status == "ok" and found[ran.name].next_run is None
    assert found[hourly.name].status == "ok", found[hourly.name].reason
    assert found[later.name].status == "never_run"
    assert found[later.name].next_run == NOW + dt.timedelta(hours=2)
    # The clocked job that never ran past its time is late (beat would run it at once).
    missed = ClockedSchedule.objects.create(clocked_time=NOW - dt.timedelta(minutes=10))
    PeriodicTask.objects.create(name="clocked-late", task="scheduling.expire_coupons",
                                clocked=missed, one_off=True)
    assert {s.name: s for s in job_statuses(NOW, outcomes=False)}["clocked-late"].status == \
        "late"
