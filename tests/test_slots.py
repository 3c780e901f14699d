"""Slot computation: the daylight-saving policy documented in scheduling/slots.py, day-of-week
numbering, intervals and catch-up arithmetic. Pure functions, no database."""

import datetime as dt
from zoneinfo import ZoneInfo

from celery import schedules
from django_celery_beat.tzcrontab import TzAwareCrontab

from scheduling.engine import slots

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def cron(tz=BERLIN, **fields):
    return TzAwareCrontab(tz=tz, **fields)


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def runs_between(schedule, start, end):
    return [s for s in slots.crontab_slots(schedule, start) if s.at < end][:200]


def test_daily_0230_on_spring_forward_day_runs_once_shifted_into_summer_time():
    # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    found = runs_between(cron(minute="30", hour="2"), utc(2026, 3, 27), utc(2026, 3, 31))
    assert [s.at for s in found] == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),  # the gap: 03:30 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert found[2].dst == "gap"
    assert found[2].local.strftime("%H:%M %Z") == "03:30 CEST"


def test_daily_0230_on_fall_back_day_runs_once_in_the_first_occurrence():
    # 2026-10-25: 02:00-02:59 happens twice (CEST, then CET).
    found = runs_between(cron(minute="30", hour="2"), utc(2026, 10, 24), utc(2026, 10, 26))
    assert [s.at for s in found] == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30)]
    assert found[1].dst == "repeated"
    assert found[1].local.strftime("%H:%M %Z") == "02:30 CEST"


def test_hourly_job_runs_every_real_hour_across_both_transitions():
    hourly = cron(minute="30")
    spring = runs_between(hourly, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # local 29 March
    assert len(spring) == 23  # a 23-hour day; the gap's 02:30 is the same instant as 03:30
    assert len({s.at for s in spring}) == 23
    autumn = runs_between(hourly, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))  # local 25 Oct
    assert len(autumn) == 25  # a 25-hour day: both 02:30s run
    assert [s.local.strftime("%H:%M %Z") for s in autumn if s.dst] == ["02:30 CEST", "02:30 CET"]
    instants = [s.at for s in autumn]
    assert {b - a for a, b in zip(instants, instants[1:], strict=False)} == {dt.timedelta(hours=1)}


def test_day_of_week_counts_sunday_as_zero():
    monday_nine = cron(tz=UTC, minute="0", hour="9", day_of_week="1")
    first = slots.next_slot(monday_nine, utc(2026, 11, 23, 10))  # a Monday, after 09:00
    assert first == utc(2026, 11, 30, 9)
    assert first.strftime("%A") == "Monday"
    sunday = slots.next_slot(cron(tz=UTC, minute="0", hour="9", day_of_week="0"),
                             utc(2026, 11, 23))
    assert sunday.strftime("%A") == "Sunday"


def test_rare_crontab_is_found_years_ahead_and_one_beyond_the_horizon_is_never_due():
    leap_tuesday = cron(tz=UTC, minute="0", hour="0", day_of_month="29", month_of_year="2",
                        day_of_week="2")
    assert slots.next_slot(leap_tuesday, utc(2026, 1, 1)) == utc(2028, 2, 29)
    leap_monday = cron(tz=UTC, minute="0", hour="0", day_of_month="29", month_of_year="2",
                       day_of_week="1")  # next in 2044, beyond SEARCH_YEARS
    assert slots.next_slot(leap_monday, utc(2026, 1, 1)) is None


def test_interval_slots_are_aligned_to_the_last_slot_not_to_now():
    every_10 = schedules.schedule(dt.timedelta(seconds=10))
    last = utc(2026, 1, 1, 0, 0, 0)
    assert slots.next_slot(every_10, last) == utc(2026, 1, 1, 0, 0, 10)
    assert slots.latest_due(every_10, last, utc(2026, 1, 1, 0, 0, 9)) is None
    due = slots.latest_due(every_10, last, utc(2026, 1, 1, 0, 1, 5))
    assert (due.first, due.latest, due.count, due.before_latest) == (
        utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 1, 0), 6, utc(2026, 1, 1, 0, 0, 50)
    )


def test_crontab_catch_up_counts_every_missed_minute():
    every_minute = cron(tz=UTC, minute="*")
    due = slots.latest_due(every_minute, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 30, 20))
    assert (due.first, due.latest, due.count, due.before_latest) == (
        utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 30), 30, utc(2026, 1, 1, 10, 29)
    )
    one = slots.latest_due(every_minute, utc(2026, 1, 1, 10, 0), utc(2026, 1, 1, 10, 1))
    assert (one.count, one.before_latest) == (1, None)


def test_upcoming_lists_local_times_in_the_crontab_timezone():
    runs = slots.upcoming(cron(minute="0", hour="9"), utc(2026, 11, 23, 12), count=5)
    assert [r.local.strftime("%Y-%m-%d %H:%M %Z") for r in runs] == [
        f"2026-11-{day} 09:00 CET" for day in (24, 25, 26, 27, 28)
    ]
