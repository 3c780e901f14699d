"""Set-based demo data: one INSERT ... SELECT per table, over a generated series.

A million rows take seconds because the database generates them; nothing is built row by row in
Python. PostgreSQL and SQLite differ only in how the series is made and how a timestamp is
shifted. (In the SQL below ``%%`` is a literal modulo operator; ``%s`` a parameter.)
"""

import secrets
from datetime import datetime, timedelta

from django.db import connection, transaction

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard
from scheduling.billing.timeutils import last_expiring_month


class _Dialect:
    def __init__(self, now: datetime):
        self.vendor = connection.vendor
        if self.vendor == "postgresql":
            self.series = "generate_series(1, %s) AS s(i)"
            self.now = now
        elif self.vendor == "sqlite":
            self.series = (
                "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < %s) "
                "SELECT i FROM s) AS s"
            )
            # Django stores aware datetimes in SQLite as naive UTC text.
            self.now = now.replace(tzinfo=None).isoformat(sep=" ")
        else:
            raise NotImplementedError(f"demo data is not written for {self.vendor}")

    def shift(self, amount: str, unit: str) -> str:
        """SQL for ``now`` (one %s parameter) shifted by the signed integer SQL ``amount``."""
        if self.vendor == "postgresql":
            return f"(%s::timestamptz + ({amount}) * interval '1 {unit}')"
        return f"datetime(%s, printf('%%+d {unit}s', {amount}))"


def _execute(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def seed_coupons(n: int, due: int, now: datetime) -> None:
    """``due`` coupons expired up to a day ago; the rest expire over the next day, a few a
    minute."""
    d = _Dialect(now)
    prefix = f"DEMO-{secrets.token_hex(4).upper()}"
    past, future = d.shift("-(1 + i %% 1440)", "minute"), d.shift("1 + i %% 1440", "minute")
    _execute(
        f"INSERT INTO {Coupon._meta.db_table} (code, expires_at, status, expired_at, created_at) "
        f"SELECT %s || '-' || i, CASE WHEN i <= %s THEN {past} ELSE {future} END, "
        f"'active', NULL, %s FROM {d.series}",
        [prefix, due, d.now, d.now, d.now, n],
    )


def seed_cards(n: int, due: int, now: datetime, within_days: int = 30) -> None:
    """``due`` cards end their validity within ``within_days`` (or already have); the rest later."""
    d = _Dialect(now)
    year, month = last_expiring_month(now + timedelta(days=within_days))
    last_due = year * 12 + (month - 1)  # month index: year * 12 + zero-based month
    index = f"(CASE WHEN i <= %s THEN {last_due} - (i %% 3) ELSE {last_due} + 1 + (i %% 36) END)"
    _execute(
        f"INSERT INTO {PaymentCard._meta.db_table} "
        f"(customer_email, brand, last4, exp_month, exp_year, expiry_flagged_at, created_at) "
        f"SELECT 'customer' || (i %% 50000) || '@example.com', "
        f"CASE i %% 3 WHEN 0 THEN 'visa' WHEN 1 THEN 'mastercard' ELSE 'amex' END, "
        f"CAST(1000 + i %% 9000 AS TEXT), ({index} %% 12) + 1, {index} / 12, NULL, %s "
        f"FROM {d.series}",
        [due, due, d.now, n],
    )


def seed_checkouts(n: int, due: int, now: datetime, older_than_days: int = 7) -> None:
    """``due`` open or abandoned sessions idle longer than ``older_than_days``; the rest recent,
    or old but completed (never stale)."""
    d = _Dialect(now)
    stale = d.shift(f"-({older_than_days} + 1 + i %% 30)", "day")
    recent = d.shift(f"-(i %% {older_than_days})", "day")
    old = d.shift("-(30 + i %% 30)", "day")
    updated = f"CASE WHEN i <= %s THEN {stale} WHEN i %% 2 = 0 THEN {recent} ELSE {old} END"
    status = (
        "CASE WHEN i <= %s THEN (CASE WHEN i %% 2 = 0 THEN 'open' ELSE 'abandoned' END) "
        "WHEN i %% 2 = 0 THEN 'open' ELSE 'completed' END"
    )
    _execute(
        f"INSERT INTO {CheckoutSession._meta.db_table} "
        f"(customer_email, status, created_at, updated_at) "
        f"SELECT 'customer' || (i %% 50000) || '@example.com', {status}, {updated}, {updated} "
        f"FROM {d.series}",
        [due] + [due, d.now, d.now, d.now] * 2 + [n],
    )
