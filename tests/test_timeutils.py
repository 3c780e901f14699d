from datetime import UTC, datetime, timedelta

import pytest

from scheduling.billing.timeutils import card_valid_until, last_expiring_month


@pytest.mark.parametrize(
    ("year", "month", "expected"),
    [
        (2026, 12, datetime(2027, 1, 1, tzinfo=UTC)),  # December rolls into next year
        (2027, 1, datetime(2027, 2, 1, tzinfo=UTC)),
        (2028, 2, datetime(2028, 3, 1, tzinfo=UTC)),  # leap February: valid through the 29th
        (2026, 1, datetime(2026, 2, 1, tzinfo=UTC)),  # 31-day month
    ],
)
def test_card_is_valid_through_last_moment_of_its_month(year, month, expected):
    assert card_valid_until(year, month) == expected


@pytest.mark.parametrize(
    ("horizon", "expected"),
    [
        (datetime(2027, 1, 1, 0, 0, tzinfo=UTC), (2026, 12)),  # exactly when 12/26 ends
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), (2026, 11)),  # 12/26 still valid
        (datetime(2026, 3, 31, 12, tzinfo=UTC), (2026, 2)),  # the 31st
        (datetime(2026, 1, 15, tzinfo=UTC), (2025, 12)),
    ],
)
def test_last_expiring_month(horizon, expected):
    assert last_expiring_month(horizon) == expected


def test_last_expiring_month_agrees_with_card_valid_until():
    # Exhaustive over a span of months and horizons near each boundary.
    for year in (2025, 2026, 2027):
        for month in range(1, 13):
            end = card_valid_until(year, month)
            for horizon in (end - timedelta(microseconds=1), end, end + timedelta(days=20)):
                y, m = last_expiring_month(horizon)
                assert ((year, month) <= (y, m)) == (end <= horizon)
