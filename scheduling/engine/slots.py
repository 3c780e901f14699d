"""Nominal run times ("slots") of a schedule, computed the same way by every beat.

A slot is the instant a run was *due*, not when it was sent. Two beats that agree on the last slot
of a job agree on the next one, which is what lets the ledger's unique (job, slot)
constraint fence a duplicate send.

Crontab slots are computed here rather than with ``crontab.remaining_delta`` so the daylight-saving
policy is explicit and tested (``tests/test_slots.py``). Wall-clock times are read in the
crontab's own timezone:

* **gap** (spring forward, e.g. 02:30 on Europe/Berlin's March transition day does not exist):
  the run happens at the same wall time shifted forward by the gap (03:30 local). If that instant
  is also a regular run of the job (an hourly job's 03:30), it runs once.
* **repeated hour** (fall back, 02:00-02:59 happens twice): a job with specific hours runs once,
  in the first occurrence; a job whose hour field is ``*`` runs in both, so an hourly job still
  runs every real hour (25 runs that day).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from celery import schedules

UTC = dt.UTC
#: How far ahead a crontab is searched before it is declared never due (29 February on a Monday
#: can be years away; 31 February never comes).
SEARCH_YEARS = 8
ALL_HOURS = frozenset(range(24))


@dataclass(frozen=True)
class Slot:
    at: dt.datetime  # aware, UTC
    local: dt.datetime  # aware, in the schedule's timezone
    dst: str = ""  # "" | "gap" | "repeated"


def _crontab_day_matches(cron: schedules.crontab, day: dt.date) -> bool:
    # Celery requires month, day of month AND day of week to match; day of week counts 0 = Sunday.
    return (
        day.month in cron.month_of_year
        and day.day in cron.day_of_month
        and day.isoweekday() % 7 in cron.day_of_week
    )


def _resolve(naive: dt.datetime, tz: ZoneInfo, every_hour: bool) -> list[Slot]:
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [Slot(first.astimezone(UTC), first)]
    shifted = first.astimezone(UTC).astimezone(tz)
    if shifted.replace(tzinfo=None) != naive:  # wall time does not exist: gap
        return [Slot(first.astimezone(UTC), shifted, "gap")]
    slots = [Slot(first.astimezone(UTC), first, "repeated")]
    if every_hour:
        slots.append(Slot(second.astimezone(UTC), second, "repeated"))
    return slots


def _crontab_day(cron: schedules.crontab, tz: ZoneInfo, day: dt.date) -> list[Slot]:
    every_hour = frozenset(cron.hour) == ALL_HOURS
    found: dict[dt.datetime, Slot] = {}
    for hour in sorted(cron.hour):
        for minute in sorted(cron.minute):
            for slot in _resolve(dt.datetime.combine(day, dt.time(hour, minute)), tz, every_hour):
                # A gap-shifted time that equals a regular run is one run, not two.
                if slot.at not in found or not slot.dst:
                    found[slot.at] = slot
    return [found[at] for at in sorted(found)]


def crontab_slots(cron: schedules.crontab, after: dt.datetime) -> Iterator[Slot]:
    """Slots of ``cron`` strictly after ``after``, in order."""
    tz = getattr(cron, "tz", None) or UTC
    if not isinstance(tz, ZoneInfo):
        tz = ZoneInfo(str(tz))
    # Start a day early: a local day can begin before ``after`` in UTC terms.
    day = after.astimezone(tz).date() - dt.timedelta(days=1)
    last_day = day + dt.timedelta(days=366 * SEARCH_YEARS)
    while day <= last_day:
        if _crontab_day_matches(cron, day):
            for slot in _crontab_day(cron, tz, day):
                if slot.at > after:
                    yield slot
        day += dt.timedelta(days=1)


def crontab_slots_backwards(cron: schedules.crontab, at_or_before: dt.datetime) -> Iterator[Slot]:
    """Slots of ``cron`` at or before ``at_or_before``, latest first."""
    tz = getattr(cron, "tz", None) or UTC
    if not isinstance(tz, ZoneInfo):
        tz = ZoneInfo(str(tz))
    day = at_or_before.astimezone(tz).date() + dt.timedelta(days=1)
    first_day = day - dt.timedelta(days=366 * SEARCH_YEARS)
    while day >= first_day:
        if _crontab_day_matches(cron, day):
            for slot in reversed(_crontab_day(cron, tz, day)):
                if slot.at <= at_or_before:
                    yield slot
        day -= dt.timedelta(days=1)


def next_slot(schedule, after: dt.datetime) -> dt.datetime | None:
    """The first slot strictly after ``after`` (aware), or None if the schedule never fires again.

    ``schedule`` is a Celery schedule object as django-celery-beat builds it from its rows:
    an interval (``schedules.schedule``) counts from ``after``; clocked and solar ones answer
    from their own definition.
    """
    if isinstance(schedule, schedules.crontab):
        return next((slot.at for slot in crontab_slots(schedule, after)), None)
    if isinstance(schedule, schedules.solar):
        return _solar_next(schedule, after)
    if hasattr(schedule, "clocked_time"):  # django_celery_beat.clockedschedule.clocked
        at = schedule.clocked_time
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return at if at > after else None
    if isinstance(schedule, schedules.schedule):
        every = schedule.run_every
        if every.total_seconds() <= 0:
            return None
        return after + every
    raise TypeError(f"unsupported schedule type: {schedule!r}")


@dataclass(frozen=True)
class Due:
    first: dt.datetime  # the first slot after the last one handled
    latest: dt.datetime  # the latest slot at or before now
    count: int  # slots from first to latest inclusive (capped for long crontab gaps)
    before_latest: dt.datetime | None  # the slot just before latest (None when count == 1)


def latest_due(schedule, last: dt.datetime, now: dt.datetime, limit: int = 100_000) -> Due | None:
    """The slots after ``last`` that are due at ``now``, or None when none is.

    ``count`` is exact for intervals; for other schedules it is counted up to ``limit`` (a
    one-minute crontab missed for a week is about 10,000) and reported as ``limit`` beyond that.
    """
    first = next_slot(schedule, last)
    if first is None or first > now:
        return None
    if isinstance(schedule, schedules.crontab):
        backwards = crontab_slots_backwards(schedule, now)
        latest = next(backwards).at
        before = next(backwards).at if latest > first else None
        count = 0
        for slot in crontab_slots(schedule, last):
            if slot.at > latest or count >= limit:
                break
            count += 1
        return Due(first, latest, count, before)
    if isinstance(schedule, schedules.schedule):  # an interval (crontab/solar are not subclasses)
        every = schedule.run_every
        steps = int((now - first) / every)
        latest = first + steps * every
        return Due(first, latest, steps + 1, latest - every if steps else None)
    # Solar and clocked: walk forward (a few slots a day at most).
    before, latest, count = None, first, 1
    while count < limit:
        following = next_slot(schedule, latest)
        if following is None or following > now:
            break
        before, latest, count = latest, following, count + 1
    return Due(first, latest, count, before)


def upcoming(schedule, after: dt.datetime, count: int = 5) -> list[Slot]:
    """The next ``count`` slots after ``after`` with their local times (for people to read)."""
    if isinstance(schedule, schedules.crontab):
        found = []
        for slot in crontab_slots(schedule, after):
            found.append(slot)
            if len(found) == count:
                break
        return found
    found, cursor = [], after
    tz = UTC
    for _ in range(count):
        cursor = next_slot(schedule, cursor)
        if cursor is None:
            break
        found.append(Slot(cursor, cursor.astimezone(tz)))
    return found


def _solar_next(schedule: schedules.solar, after: dt.datetime) -> dt.datetime | None:
    # solar.remaining_estimate(last_run_at) measures from "now"; with now pinned to ``after`` the
    # answer is the next event after ``after``.
    pinned = schedules.solar(
        schedule.event, schedule.lat, schedule.lon, nowfun=lambda: after, app=schedule._app
    )
    return after + pinned.remaining_estimate(after)
