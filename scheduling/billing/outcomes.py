"""What "done" means for each maintenance job, as a query for the rows the job should have dealt
with by ``as_of``. Monitoring calls these with ``as_of = now - grace``: rows left over after a
"successful" run for longer than the grace make the job ``failing``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard

CAP = 10_000  # counted up to this many; beyond, "at least"


@dataclass(frozen=True)
class Outcome:
    what: str
    queryset_for: object  # (as_of, kwargs) -> QuerySet

    def overdue(self, as_of: dt.datetime, kwargs: dict) -> int:
        return self.queryset_for(as_of, kwargs)[:CAP].count()


OUTCOMES = {
    "scheduling.expire_coupons": Outcome(
        "active coupons past their expiry",
        lambda as_of, kw: Coupon.objects.due(now=as_of),
    ),
    "scheduling.flag_expiring_cards": Outcome(
        "unflagged payment cards expiring within the window",
        lambda as_of, kw: PaymentCard.objects.expiring(
            now=as_of, within_days=int(kw.get("within_days", 30))
        ),
    ),
    "scheduling.delete_stale_checkouts": Outcome(
        "stale checkout sessions not deleted",
        lambda as_of, kw: CheckoutSession.objects.stale(
            now=as_of, older_than_days=int(kw.get("older_than_days", 7))
        ),
    ),
}
