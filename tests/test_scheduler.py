"""The scheduler in-process, on a fake clock, against PostgreSQL and the Redis test broker:
lease, ledger, catch-up and overlap policies, change detection, heartbeat, resend."""

import datetime as dt

import pytest
from django.conf import settings
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from project.celery import app
from scheduling.beat import (
    BeatHeartbeat,
    BeatLease,
    Dispatch,
    JobPolicy,
    LeasedScheduler,
    ScheduleVersion,
)
from tests.support.broker import sent_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]

START = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, start=START):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


def interval_job(name, seconds, *, anchor=START, **fields):
    every, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
    task = PeriodicTask.objects.create(name=name, task="scheduling.expire_coupons",
                                       interval=every, **fields)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=anchor)
    return task


def minute_job(name, *, anchor=START):
    cron = CrontabSchedule.objects.create(minute="*", timezone="UTC")
    task = PeriodicTask.objects.create(name=name, task="scheduling.expire_coupons", crontab=cron)
    PeriodicTask.objects.filter(pk=task.pk).update(date_changed=anchor)
    return task


def beat(clock, name):
    return LeasedScheduler(app=app, clock=clock, instance=name)


def rows(task, **filters):
    return list(Dispatch.objects.filter(periodic_task=task, **filters).order_by("slot"))


def test_two_schedulers_over_720_ticks_with_failovers_send_each_slot_once(clock, only, broker):
    """Two beats tick on one fake clock for an hour (5 s ticks). The leader stalls past the
    lease TTL twice (the other takes over), one stale leader tries to dispatch after losing the
    lease, and one leader stops cleanly (the other takes over on the same tick)."""
    every10 = interval_job("every-10s", 10)
    minutely = minute_job("every-minute")
    a, b = beat(clock, "a"), beat(clock, "b")
    stalls = {"a": range(100, 130), "b": range(400, 440)}
    leaders = []
    for tick in range(720):
        clock.advance(5)
        if tick == 130:  # a wakes from its stall still believing it leads: the ledger fences it
            a.dispatch(clock())
        if tick == 600 and a.leading:
            a.close()
        if tick == 600 and b.leading:
            b.close()
        ticked = [s for s in (a, b) if tick not in stalls[s.instance] and not s.closed]
        for s in ticked:
            s.tick()
        leaders.append(tuple(s.instance for s in ticked if s.leading))

    assert all(len(lead) <= 1 for lead in leaders), "two leaders on one tick"
    assert {"a", "b"} <= {lead[0] for lead in leaders if lead}

    def covered(task, step):
        slots = []
        for row in rows(task):
            if row.kind == Dispatch.Kind.MISSED:
                at = row.missed_from
                while at <= row.slot:
                    slots.append(at)
                    at += step
            else:
                assert row.kind == Dispatch.Kind.SCHEDULED
                slots.append(row.slot)
        return slots

    for task, step in ((every10, dt.timedelta(seconds=10)), (minutely, dt.timedelta(minutes=1))):
        slots = covered(task, step)
        expected = []
        at = slots[0]
        while at <= slots[-1]:
            expected.append(at)
            at += step
        assert slots == expected, f"{task.name}: a slot lost or handled twice"
        assert slots[-1] >= clock() - step - dt.timedelta(seconds=5)
    scheduled = Dispatch.objects.filter(kind=Dispatch.Kind.SCHEDULED)
    assert scheduled.values("task_id").distinct().count() == scheduled.count()
    assert len(sent_messages(broker)) == scheduled.count()  # one message per dispatched slot
    assert Dispatch.objects.filter(kind=Dispatch.Kind.MISSED).exists()  # the stalls missed some


def test_message_carries_slot_and_name_headers_and_the_ledger_task_id(clock, only, broker):
    job = interval_job("every-10s", 10)
    clock.advance(10)
    beat(clock, "a").tick()
    (row,) = rows(job)
    (message,) = sent_messages(broker)
    headers = message["headers"]
    assert headers["id"] == row.task_id
    assert headers["periodic_task_name"] == "every-10s"
    assert headers["scheduled_slot"] == "2026-11-23T12:00:10+00:00"
    assert headers["task"] == "scheduling.expire_coupons"
    assert row.state == Dispatch.State.SENT and row.slot == START + dt.timedelta(seconds=10)


def test_standby_takes_over_after_ttl_and_at_once_after_a_clean_stop(clock, only):
    interval_job("every-10s", 10)
    a, b = beat(clock, "a"), beat(clock, "b")
    a.tick()
    b.tick()
    assert (a.leading, b.leading) == (True, False)
    clock.advance(settings.SCHEDULING_BEAT_LEASE_TTL - 1)  # a silent, lease not yet expired
    b.tick()
    assert not b.leading
    clock.advance(2)
    b.tick()
    assert b.leading
    a.tick()
    assert not a.leading  # the old leader stands by; it neither exits nor fights
    b.close()
    a.tick()  # same instant: the released lease is free at once
    assert a.leading
    lease = BeatLease.objects.get()
    assert lease.holder == "a"


def test_restart_after_kill_continues_from_the_ledger(clock, only):
    job = interval_job("every-10s", 10)
    first = beat(clock, "first")
    clock.advance(10)
    first.tick()
    assert len(rows(job)) == 1
    # Killed (no close): a new process starts, waits out the lease, and must not resend 12:00:10.
    clock.advance(settings.SCHEDULING_BEAT_LEASE_TTL + 1)
    second = beat(clock, "second")
    second.tick()
    slots = [r.slot for r in rows(job)]
    assert len(slots) == len(set(slots))
    assert slots[0] == START + dt.timedelta(seconds=10)
    assert second.leading


def test_catch_up_runs_the_latest_slot_once_and_records_older_ones_missed(clock, only):
    job = minute_job("every-minute")
    Dispatch.objects.create(periodic_task=job, slot=START, task_name=job.task, task_id="x",
                            state=Dispatch.State.SUCCEEDED)
    clock.advance(30 * 60 + 20)  # beat was down for half an hour
    beat(clock, "a").tick()
    latest = rows(job)[-1]
    (missed,) = rows(job, kind=Dispatch.Kind.MISSED)
    assert (missed.missed_from, missed.slot, missed.missed_count) == (
        START + dt.timedelta(minutes=1), START + dt.timedelta(minutes=29), 29
    )
    assert latest.kind == Dispatch.Kind.SCHEDULED
    assert latest.slot == START + dt.timedelta(minutes=30)


def test_slots_older_than_the_window_are_only_recorded(clock, only, broker):
    job = minute_job("every-minute")
    JobPolicy.objects.create(periodic_task=job, catch_up_window=300)
    Dispatch.objects.create(periodic_task=job, slot=START, task_name=job.task, task_id="x")
    # Hung at 12:00, wakes at 12:30:20: 12:30 is on time, 12:01..12:29 are older than the window.
    clock.advance(30 * 60 + 20)
    sched = beat(clock, "a")
    sched.tick()
    assert [r.kind for r in rows(job)] == ["scheduled", "missed", "scheduled"]
    # A window of 0: after a stall, even the latest slot is only recorded (it is 40 s late,
    # beyond the 10 s every slot is allowed for tick jitter).
    JobPolicy.objects.filter(periodic_task=job).update(catch_up_window=0)
    clock.advance(80)  # 12:31:40
    sched.tick()
    assert [r.kind for r in rows(job)] == ["scheduled", "missed", "scheduled", "missed"]
    assert rows(job)[-1].slot == START + dt.timedelta(minutes=31)


def test_overlap_skips_a_slot_while_the_previous_run_is_running(clock, only):
    job = interval_job("every-10s", 10)
    sched = beat(clock, "a")
    clock.advance(10)
    sched.tick()
    (row,) = rows(job)  # the worker has started it (django-celery-results records STARTED)
    TaskResult.objects.create(task_id=row.task_id, status="STARTED", date_started=clock())
    clock.advance(10)
    sched.tick()
    assert [r.kind for r in rows(job)] == ["scheduled", "skipped"]
    JobPolicy.objects.update_or_create(periodic_task=job, defaults={"overlap": "allow"})
    clock.advance(10)
    sched.tick()
    assert [r.kind for r in rows(job)] == ["scheduled", "skipped", "scheduled"]


def test_a_stale_leader_does_not_skip_a_slot_another_beat_already_handled(clock, only):
    job = interval_job("every-10s", 10)
    sched = beat(clock, "a")
    clock.advance(10)
    sched.tick()
    (row,) = rows(job)
    TaskResult.objects.create(task_id=row.task_id, status="STARTED", date_started=clock())
    # Meanwhile (this beat stalled) another beat recorded 12:00:20..12:00:40 as missed.
    Dispatch.objects.create(periodic_task=job, slot=START + dt.timedelta(seconds=40),
                            kind=Dispatch.Kind.MISSED, state=Dispatch.State.NOT_SENT,
                            missed_from=START + dt.timedelta(seconds=20), missed_count=3,
                            task_name=job.task)
    clock.advance(10)
    sched.tick()  # would skip 12:00:20 (the run is still going), but that slot is handled
    assert [r.kind for r in rows(job)] == ["scheduled", "missed"]


@pytest.mark.parametrize("how", ["queryset_update", "raw_sql", "model_save"])
def test_any_schedule_change_is_seen_on_the_next_tick(clock, only, how):
    from django.db import connection

    job = interval_job("every-10s", 10)
    sched = beat(clock, "a")
    sched.tick()
    version = sched.planner.loaded_version
    if how == "queryset_update":
        PeriodicTask.objects.filter(pk=job.pk).update(kwargs='{"x": 1}')
    elif how == "raw_sql":
        with connection.cursor() as cursor:
            cursor.execute("UPDATE django_celery_beat_periodictask SET kwargs = %s WHERE id = %s",
                           ['{"x": 1}', job.pk])
    else:
        job.kwargs = '{"x": 1}'
        job.save()
    assert ScheduleVersion.current() != version
    clock.advance(1)
    sched.tick()
    assert sched.planner.loaded_version == ScheduleVersion.current()
    assert sched.planner.jobs["every-10s"].model.kwargs == '{"x": 1}'


def test_bookkeeping_writes_do_not_count_as_a_change(clock, only):
    interval_job("every-10s", 10)
    sched = beat(clock, "a")
    clock.advance(10)
    before = ScheduleVersion.current()
    sched.tick()  # dispatches, which writes last_run_at and total_run_count
    assert PeriodicTask.objects.get().total_run_count == 1
    assert ScheduleVersion.current() == before


def test_heartbeat_says_who_leads_and_which_schedule_it_loaded(clock, only):
    interval_job("every-10s", 10)
    a, b = beat(clock, "a"), beat(clock, "b")
    a.tick()
    b.tick()
    beats = {h.instance: h for h in BeatHeartbeat.objects.all()}
    assert beats["a"].is_leader and not beats["b"].is_leader
    assert beats["a"].schedule_version == ScheduleVersion.current()
    assert beats["a"].last_tick_at == clock()
    a.close()
    assert BeatHeartbeat.objects.get(instance="a").stopped_at == clock()


def test_a_reserved_row_left_by_a_killed_beat_is_sent_again_with_its_task_id(clock, only, broker):
    job = interval_job("every-10s", 10)
    Dispatch.objects.create(periodic_task=job, slot=START, task_name=job.task, task_id="kept-id",
                            state=Dispatch.State.RESERVED, dispatched_at=START)
    clock.advance(5)
    sched = beat(clock, "a")
    sched.tick()
    assert Dispatch.objects.get(task_id="kept-id").state == Dispatch.State.RESERVED  # too young
    clock.advance(15)
    sched.tick()
    assert Dispatch.objects.get(task_id="kept-id").state == Dispatch.State.SENT
    ids = [m["headers"]["id"] for m in sent_messages(broker)]
    assert ids.count("kept-id") == 1


def test_paused_time_is_not_caught_up_after_resume(clock, only):
    job = minute_job("every-minute")
    Dispatch.objects.create(periodic_task=job, slot=START, task_name=job.task, task_id="x")
    clock.advance(3600)
    JobPolicy.objects.create(periodic_task=job, resumed_at=clock())
    clock.advance(61)
    beat(clock, "a").tick()
    assert [(r.kind, r.slot) for r in rows(job)][1:] == [
        ("scheduled", START + dt.timedelta(minutes=61))
    ]


def test_a_send_that_fails_is_retried_from_the_ledger_once_the_broker_answers(
    clock, only, broker, monkeypatch
):
    job = interval_job("every-10s", 10)
    sched = beat(clock, "a")
    # A real connection refused: beat writes to a port nothing listens on (the environment
    # variable is what Celery reads first), and does not retry the publish.
    monkeypatch.setenv("CELERY_BROKER_WRITE_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "task_publish_retry_policy", {"max_retries": 0})
    monkeypatch.setitem(app.conf, "broker_connection_max_retries", 1)
    clock.advance(10)
    assert sched.tick() == settings.SCHEDULING_BEAT_TICK  # logged, beat keeps running
    assert not rows(job)  # the reserved row of the failed send was removed

    monkeypatch.delenv("CELERY_BROKER_WRITE_URL")
    clock.advance(1)
    sched.tick()
    (row,) = rows(job)
    assert (row.slot, row.state) == (START + dt.timedelta(seconds=10), Dispatch.State.SENT)
    assert [m["headers"]["id"] for m in sent_messages(broker)] == [row.task_id]


def test_a_restarted_beat_takes_the_lease_of_a_dead_process_on_its_host_at_once(
    clock, only, request
):
    import socket
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    dead = f"{socket.gethostname()}:{gone.pid}:deadbeef"
    running = subprocess.Popen(["sleep", "120"])  # another process that runs (not pid 1: the
    request.addfinalizer(running.kill)  # suite itself may be pid 1 in a container)
    alive = f"{socket.gethostname()}:{running.pid}:cafe"  # its lease is respected
    BeatLease.objects.create(name="default", holder=alive, expires_at=clock() + dt.timedelta(
        seconds=30))
    sched = beat(clock, "fresh")
    sched.tick()
    assert not sched.leading
    BeatLease.objects.update(holder=dead)
    BeatHeartbeat.objects.create(instance=dead, hostname="h", pid=gone.pid, started_at=clock(),
                                 last_tick_at=clock(), is_leader=True)
    sched.tick()
    assert sched.leading
    assert BeatHeartbeat.objects.get(instance=dead).stopped_at == clock()


def test_an_expired_job_is_disabled_by_the_scheduler_and_audited_with_the_reason(clock, only):
    from scheduling.beat import ScheduleChange

    job = interval_job("ends", 10, expires=START + dt.timedelta(seconds=25))
    scheduler = beat(clock, "a")
    for _ in range(3):
        clock.advance(10)
        scheduler.tick()
    assert len(rows(job, kind="scheduled")) == 2  # 12:00:10 and 12:00:20, then expired
    job.refresh_from_db()
    assert not job.enabled
    change = ScheduleChange.objects.get(periodic_task=job)
    assert change.action == "paused" and change.changed_by is None
    assert change.reason.startswith("expired at 2026-11-23 12:00:25 UTC: disabled by the "
                                    "scheduler (a)")
    from monitoring.status import job_status

    assert job_status(job, clock()).status == "expired"


def test_an_interval_job_with_start_time_runs_first_at_start_time(clock, only):
    later = interval_job("from-start", 60, start_time=START + dt.timedelta(seconds=90))
    passed = interval_job("start-passed", 60, start_time=START - dt.timedelta(hours=1))
    scheduler = beat(clock, "a")
    for _ in range(4):
        clock.advance(30)
        scheduler.tick()
    # Like django-celery-beat: at start_time, then every interval; a passed start_time at once.
    assert [r.slot for r in rows(later, kind="scheduled")] == [START + dt.timedelta(seconds=90)]
    assert [r.slot for r in rows(passed, kind="scheduled")] == [
        START + dt.timedelta(seconds=s) for s in (0, 60, 120)]


def test_a_solar_job_shows_its_next_runs_and_beat_sends_it_at_sunrise(clock, only,
                                                                      admin_client):
    from django_celery_beat.models import SolarSchedule

    from scheduling.beat import upcoming_runs

    sunrise = SolarSchedule.objects.create(event="sunrise", latitude=52.37, longitude=4.90)
    job = PeriodicTask.objects.create(name="at-sunrise", task="scheduling.expire_coupons",
                                      solar=sunrise)
    PeriodicTask.objects.filter(pk=job.pk).update(date_changed=START)
    job.refresh_from_db()
    runs = upcoming_runs(job, START)
    assert len(runs) == 5
    assert all(dt.timedelta(hours=20) < b.at - a.at < dt.timedelta(hours=28)
               for a, b in zip(runs, runs[1:], strict=False))
    from django.utils import timezone

    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{job.pk}/change/")
    today = upcoming_runs(job, timezone.now())[0].at  # the page shows the runs from now
    assert today.strftime("%H:%M UTC") in page.content.decode()
    scheduler = beat(clock, "a")
    clock.now = runs[0].at + dt.timedelta(seconds=1)
    scheduler.tick()
    assert [r.slot for r in rows(job, kind="scheduled")] == [runs[0].at]


def test_a_clocked_job_saved_after_its_time_runs_once_at_once_then_is_disabled(clock, only):
    from django_celery_beat.models import ClockedSchedule

    past = ClockedSchedule.objects.create(clocked_time=START - dt.timedelta(hours=3))
    job = PeriodicTask.objects.create(name="once", task="scheduling.expire_coupons",
                                      clocked=past, one_off=True)
    PeriodicTask.objects.filter(pk=job.pk).update(date_changed=START)
    scheduler = beat(clock, "a")
    for _ in range(3):
        clock.advance(1)
        scheduler.tick()
    assert [r.slot for r in rows(job, kind="scheduled")] == [past.clocked_time]
    job.refresh_from_db()
    assert not job.enabled and job.total_run_count == 1
