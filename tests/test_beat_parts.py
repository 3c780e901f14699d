"""The scheduler's collaborators, each on its own (no whole ticks, no private state): the lease,
the heartbeat, the planner and its pure catch-up / overlap decision, the ledger writes, the
dispatcher, the dead-man's ping and the ledger's retention."""

import datetime as dt
import json

import pytest
from django.conf import settings
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from project.celery import app
from scheduling.beat import BeatHeartbeat, BeatLease, Dispatch, JobPolicy
from scheduling.engine import ledger
from scheduling.engine.deadman import DeadmanPing
from scheduling.engine.dispatch import Dispatcher, dispatch_many
from scheduling.engine.heartbeat import Heartbeat
from scheduling.engine.lease import Lease, dead_local_holder
from scheduling.engine.planner import Decision, Missed, Planner, decide
from scheduling.engine.slots import schedules

T0 = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)
TTL = dt.timedelta(seconds=30)
EVERY_10S = schedules.schedule(dt.timedelta(seconds=10))
WINDOW = dt.timedelta(hours=1)


def at(seconds):
    return T0 + dt.timedelta(seconds=seconds)


def job(name="every-10s", seconds=10, anchor=T0):
    every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    task = PeriodicTask.objects.create(name=name, task="scheduling.expire_coupons",
                                       interval=every)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=anchor)
    task.refresh_from_db()
    return task


# --- decide: a pure function ---------------------------------------------------------------------
def test_nothing_is_due_before_the_next_slot():
    assert decide(EVERY_10S, T0, at(9), window=WINDOW, overlap="skip", running=False) is None


def test_an_on_time_slot_is_sent():
    assert decide(EVERY_10S, T0, at(10.5), window=WINDOW, overlap="skip",
                  running=False) == Decision(last=at(10), send=at(10))


def test_after_a_stall_the_latest_slot_is_sent_and_the_older_ones_missed():
    assert decide(EVERY_10S, T0, at(65), window=WINDOW, overlap="skip",
                  running=False) == Decision(last=at(60), send=at(60),
                                             missed=Missed(at(10), at(50), 5))


def test_slots_older_than_the_window_are_all_missed():
    every_minute = schedules.schedule(dt.timedelta(seconds=60))
    no_window = dict(window=dt.timedelta(seconds=0), overlap="skip", running=False)
    # 12:02 is 5 s late: within the 10 s every slot is allowed for tick jitter, so it is sent.
    assert decide(every_minute, T0, at(125), **no_window).send == at(120)
    assert decide(every_minute, T0, at(135), **no_window) == Decision(
        last=at(120), missed=Missed(at(60), at(120), 2))


@pytest.mark.parametrize(("overlap", "send", "skipped"), [("skip", None, at(10)),
                                                          ("allow", at(10), None)])
def test_overlap_policy_with_a_run_still_going(overlap, send, skipped):
    decision = decide(EVERY_10S, T0, at(10), window=WINDOW, overlap=overlap, running=True)
    assert (decision.send, decision.skipped, decision.last) == (send, skipped, at(10))


def test_an_expired_job_sends_nothing_and_moves_its_timeline_to_now():
    assert decide(EVERY_10S, T0, at(30), window=WINDOW, overlap="skip", running=False,
                  expires=at(20)) == Decision(last=at(30), expired=True)


# --- lease ---------------------------------------------------------------------------------------
def test_lease_taken_renewed_refused_to_another_then_taken_after_expiry(db):
    a, b = Lease("a", TTL), Lease("b", TTL)
    assert a.hold(T0) and a.held
    assert not b.hold(at(1))
    assert a.hold(at(20))  # renewal moves the expiry
    assert not b.hold(at(49))
    assert BeatLease.objects.get().expires_at == at(50)
    assert b.hold(at(51)) and BeatLease.objects.get().holder == "b"
    assert not a.hold(at(52)) and not a.held


def test_a_released_lease_is_free_at_once(db):
    a, b = Lease("a", TTL), Lease("b", TTL)
    a.hold(T0)
    a.release(at(1))
    assert not a.held
    assert b.hold(at(1))


def test_dead_local_holder_is_pure():
    def alive(pid):
        return pid == 42

    kwargs = dict(me="h:7:me", hostname="h", pid=7, alive=alive)
    assert dead_local_holder("h:99:x", **kwargs) == "h:99:x"  # no such process
    assert dead_local_holder("h:42:x", **kwargs) is None  # it runs
    assert dead_local_holder("h:7:old", **kwargs) == "h:7:old"  # our pid, an earlier process
    assert dead_local_holder("other:99:x", **kwargs) is None  # another host: cannot tell
    assert dead_local_holder("h:7:me", **kwargs) is None  # ourselves
    assert dead_local_holder("", **kwargs) is None
    assert dead_local_holder("h:notapid:x", **kwargs) is None
    assert dead_local_holder("h:43:x", **dict(kwargs, alive=lambda pid: None)) is None  # EPERM


# --- heartbeat -----------------------------------------------------------------------------------
def test_heartbeat_row_created_updated_and_stopped(db):
    BeatHeartbeat.objects.create(instance="ancient", hostname="h", pid=1, started_at=T0,
                                 last_tick_at=T0 - dt.timedelta(days=8))
    heartbeat = Heartbeat("a")
    heartbeat.beat(T0, leading=False, version=3)
    heartbeat.beat(at(1), leading=True, version=4)
    row = BeatHeartbeat.objects.get(instance="a")
    assert (row.started_at, row.last_tick_at, row.is_leader, row.schedule_version) == (
        T0, at(1), True, 4)
    assert not BeatHeartbeat.objects.filter(instance="ancient").exists()  # retention
    heartbeat.stop(at(2))
    row.refresh_from_db()
    assert (row.is_leader, row.stopped_at) == (False, at(2))


# --- planner -------------------------------------------------------------------------------------
def test_planner_continues_each_job_from_its_last_ledger_slot(only):
    task = job()
    other = job("every-60s", 60)
    Dispatch.objects.create(periodic_task=task, slot=at(50), task_name=task.task, task_id="x")
    planner = Planner()
    assert planner.refresh() and planner.stale
    planner.plan()
    assert not planner.stale
    assert planner.pop_due(at(59)) == []
    assert planner.seconds_to_next(at(55), cap=1.0) == 1.0
    assert planner.seconds_to_next(at(59.5), cap=1.0) == 0.5
    due, first_of_other = planner.pop_due(at(60))  # both due at 12:01, in name order
    assert (due.name, due.last) == ("every-10s", at(50))
    assert (first_of_other.name, first_of_other.last) == ("every-60s", T0)
    assert planner.pop_due(at(60)) == []  # popped until pushed back
    due.last = at(60)
    planner.push(due)
    assert [j.name for j in planner.pop_due(at(70))] == ["every-10s"]
    assert other.pk in {j.model.pk for j in planner.jobs.values()}


def test_planner_reloads_only_when_the_schedule_version_moves(only):
    task = job()
    planner = Planner()
    assert planner.refresh()
    assert not planner.refresh()
    PeriodicTask.objects.filter(pk=task.pk).update(enabled=False)  # a trigger bumps the version
    assert planner.refresh()
    assert planner.jobs == {}


def test_planner_leaves_out_a_job_whose_schedule_cannot_be_built(only):
    job()
    broken = PeriodicTask.objects.create(name="no-schedule", task="scheduling.expire_coupons",
                                         interval=IntervalSchedule.objects.first())
    PeriodicTask.objects.filter(pk=broken.pk).update(interval=None)  # as a script might
    planner = Planner()
    planner.refresh()
    assert set(planner.jobs) == {"every-10s"}


# --- ledger writes -------------------------------------------------------------------------------
def test_reserve_confirm_and_unreserve(only):
    task = job()
    (row,) = ledger.reserve([(task, at(10))], kind="scheduled", now=at(10), by="a")
    assert ledger.reserve([(task, at(10))], kind="scheduled", now=at(10), by="b") == []
    assert ledger.reserve([(task, at(5))], kind="scheduled", now=at(10), by="b") == []  # behind
    assert ledger.confirm([row.task_id]) == 1
    assert Dispatch.objects.get().state == Dispatch.State.SENT
    (second,) = ledger.reserve([(task, at(20))], kind="scheduled", now=at(20), by="a")
    ledger.unreserve(second.task_id)
    assert list(Dispatch.objects.values_list("slot", flat=True)) == [at(10)]


def test_record_missed_leaves_out_what_another_beat_handled(only):
    task = job()
    Dispatch.objects.create(periodic_task=task, slot=at(30), task_name=task.task, task_id="x")
    assert ledger.record_missed(task, EVERY_10S, at(10), at(60), 6, now=at(65), by="a")
    missed = Dispatch.objects.get(kind=Dispatch.Kind.MISSED)
    assert (missed.missed_from, missed.slot, missed.missed_count) == (at(40), at(60), 3)
    assert not ledger.record_missed(task, EVERY_10S, at(10), at(50), 5, now=at(65), by="a")


def test_record_skipped_is_fenced_by_the_timeline(only):
    task = job()
    assert ledger.record_skipped(task, at(10), now=at(10), by="a")
    assert not ledger.record_skipped(task, at(10), now=at(10), by="b")
    assert Dispatch.objects.get().kind == Dispatch.Kind.SKIPPED


# --- dispatcher ----------------------------------------------------------------------------------
def test_dispatcher_sends_due_slots_and_records_an_overlap_skip(only, broker):
    busy, free = job("busy"), job("free")
    Dispatch.objects.create(periodic_task=busy, slot=T0, task_name=busy.task, task_id="run-1",
                            state=Dispatch.State.SENT, dispatched_at=T0)
    TaskResult.objects.create(task_id="run-1", status="STARTED", date_started=T0)
    planner = Planner()
    planner.refresh()
    planner.plan()
    with app.producer_or_acquire() as producer:
        sent = Dispatcher(instance="a", app=app).send_due(planner, at(10), producer)
    assert [row.periodic_task_id for row in sent] == [free.pk]
    assert Dispatch.objects.get(periodic_task=busy, slot=at(10)).kind == Dispatch.Kind.SKIPPED
    (message,) = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert message["headers"]["periodic_task_name"] == "free"
    assert PeriodicTask.objects.get(pk=free.pk).total_run_count == 1
    assert planner.seconds_to_next(at(10), cap=30.0) == 10.0  # both queued for 12:00:20


def test_a_failed_publish_frees_its_slot_and_keeps_the_ones_sent(only, broker, monkeypatch):
    first, second = job("first"), job("second")
    from scheduling.engine import dispatch as dispatch_module

    real = dispatch_module.publish

    def publish(model, row, **kwargs):
        if model.name == "second":
            raise ConnectionError("broker went away")
        real(model, row, **kwargs)

    monkeypatch.setattr(dispatch_module, "publish", publish)
    with pytest.raises(ConnectionError):
        dispatch_many([(first, at(10)), (second, at(10))], now=at(10), by="a", app=app)
    assert list(Dispatch.objects.values_list("periodic_task__name", "state")) == [
        ("first", Dispatch.State.SENT)]


# --- dead-man's ping -----------------------------------------------------------------------------
def test_deadman_pings_once_a_minute_and_never_without_a_url():
    assert DeadmanPing(None).maybe_ping(T0) is None
    ping = DeadmanPing("http://127.0.0.1:1/never-answers")
    assert ping.due(T0)
    ping.maybe_ping(T0).join(timeout=15)
    assert not ping.due(at(59)) and ping.due(at(60))


# --- retention -----------------------------------------------------------------------------------
def test_prune_deletes_old_rows_in_chunks_and_keeps_each_jobs_newest(only):
    old_job, quiet_job = job("busy"), job("quiet")
    for day in range(1, 8):
        Dispatch.objects.create(periodic_task=old_job, slot=T0 - dt.timedelta(days=day),
                                task_name=old_job.task, task_id=f"b{day}")
    Dispatch.objects.create(periodic_task=old_job, slot=T0, task_name=old_job.task, task_id="new")
    Dispatch.objects.create(periodic_task=quiet_job, slot=T0 - dt.timedelta(days=9),
                            task_name=quiet_job.task, task_id="q")  # its only row: kept
    pruned = Dispatch.objects.prune(before=T0 - dt.timedelta(days=2), chunk=2)
    assert pruned == 5  # days 3..7, in three statements of at most 2 rows
    kept = set(Dispatch.objects.values_list("task_id", flat=True))
    assert kept == {"b1", "b2", "new", "q"}  # day 2 is at the cutoff, not before it


def test_job_policy_window_defaults_to_the_setting():
    assert JobPolicy().window() == dt.timedelta(seconds=settings.SCHEDULING_CATCH_UP_WINDOW)
    assert JobPolicy(catch_up_window=5).window() == dt.timedelta(seconds=5)


def test_crontab_jobs_are_planned_too(only):
    cron = CrontabSchedule.objects.create(minute="*", timezone="UTC")
    task = PeriodicTask.objects.create(name="minutely", task="scheduling.expire_coupons",
                                       crontab=cron)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=T0)
    planner = Planner()
    planner.refresh()
    planner.plan()
    (due,) = planner.pop_due(at(60))
    assert due.decide(at(60), running=False).send == at(60)


# --- the leader's consumer check -----------------------------------------------------------------
def test_consumer_check_waits_one_interval_then_names_unconsumed_queues(only, broker):
    from scheduling.engine.consumers import ConsumerWatch, queue_for

    reports = job("reports")
    PeriodicTask.objects.filter(pk=reports.pk).update(queue="reports")
    reports.refresh_from_db()
    assert queue_for(app, reports.task, reports.queue, reports.routing_key) == "reports"
    assert queue_for(app, "scheduling.expire_coupons") == app.conf.task_default_queue
    watch = ConsumerWatch(app, every=60)
    assert watch.maybe_check(T0, [reports]) is None  # workers started beside beat need a moment
    assert watch.maybe_check(at(59), [reports]) is None
    watch.maybe_check(at(60), [reports]).join(timeout=10)
    assert watch.check({"reports": ["reports"]}) == {"reports": ["reports"]}  # no worker answers
    assert ConsumerWatch(app, every=0).maybe_check(at(120), [reports]) is None  # switched off
