"""Where Django finds the ``scheduling`` app's models: the billing domain and the scheduler
engine's state, each defined in its own room (app label ``scheduling`` for both; table names and
migrations are unchanged by the move)."""

from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard
from scheduling.engine.models import (
    BeatHeartbeat,
    BeatLease,
    Dispatch,
    JobPolicy,
    ScheduleChange,
    ScheduleVersion,
)

__all__ = [
    "BeatHeartbeat", "BeatLease", "CheckoutSession", "Coupon", "Dispatch", "JobPolicy",
    "PaymentCard", "ScheduleChange", "ScheduleVersion",
]
