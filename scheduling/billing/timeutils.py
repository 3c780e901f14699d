"""Pure time helpers for the billing domain. UTC throughout; unit-tested at the edges."""

from datetime import UTC, datetime, timedelta


def month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1, tzinfo=UTC)


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def card_valid_until(exp_year: int, exp_month: int) -> datetime:
    """The first instant a card is *no longer* valid.

    A card printed "12/26" is valid through the last moment of December 2026 in UTC, so it
    stops being valid at 2027-01-01T00:00:00Z (exclusive end).
    """
    return month_start(*next_month(exp_year, exp_month))


def last_expiring_month(horizon: datetime) -> tuple[int, int]:
    """The latest (year, month) whose validity has ended at or before ``horizon``.

    Validity ends at a month start, and the latest month start at or before ``horizon`` is the
    start of horizon's own month; so a card has ended by ``horizon`` exactly when its expiry
    month is strictly before horizon's month. Returns that month's predecessor.
    """
    horizon = horizon.astimezone(UTC)
    if horizon.month == 1:
        return horizon.year - 1, 12
    return horizon.year, horizon.month - 1


def days_ago(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)
