"""The billing domain the maintenance jobs keep in order.

Row behaviour lives on the models, set behaviour (what each job changes) on the querysets; the
Celery tasks in ``tasks.py`` only validate arguments, take ``now`` once and call these.
"""

from datetime import datetime, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from scheduling.billing.batching import BatchResult, run_in_batches
from scheduling.billing.timeutils import card_valid_until, days_ago, last_expiring_month

__all__ = ["CheckoutSession", "Coupon", "PaymentCard"]


class CouponQuerySet(models.QuerySet):
    def due(self, *, now: datetime):
        """Active coupons whose expiry has come (a coupon is valid strictly before expires_at)."""
        return self.filter(status=Coupon.Status.ACTIVE, expires_at__lte=now)

    def expire_due(self, *, now: datetime, **batching) -> BatchResult:
        return run_in_batches(
            self.due(now=now),
            lambda chunk: chunk.update(status=Coupon.Status.EXPIRED, expired_at=now),
            **batching,
        )


class Coupon(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        EXPIRED = "expired"

    code = models.CharField(max_length=64)
    expires_at = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    expired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = CouponQuerySet.as_manager()

    class Meta:
        ordering = ["-expires_at"]
        indexes = [
            # Consumer: CouponQuerySet.due() (the expire_coupons job) and its outcome check.
            models.Index(
                fields=["expires_at"], condition=Q(status="active"), name="coupon_active_expiry_idx"
            ),
        ]
        constraints = [
            # A constraint rather than unique=True: on PostgreSQL that would add a second,
            # LIKE-pattern index on code that no query uses and every write pays for.
            models.UniqueConstraint(fields=["code"], name="coupon_code_unique"),
            models.CheckConstraint(
                condition=Q(status__in=["active", "expired"]), name="coupon_status_valid"
            ),
            # An expired coupon records when it was expired; an active one has no such time.
            models.CheckConstraint(
                condition=Q(status="active", expired_at__isnull=True)
                | Q(status="expired", expired_at__isnull=False),
                name="coupon_expired_at_matches_status",
            ),
        ]

    def __str__(self):
        return self.code


class PaymentCardQuerySet(models.QuerySet):
    def expiring(self, *, now: datetime, within_days: int):
        """Unflagged cards whose validity ends within ``within_days`` of ``now``.

        Cards already expired and never flagged are included: they need a new card even more
        urgently, and the flag is how the rest of the business learns that.
        """
        year, month = last_expiring_month(now + timedelta(days=within_days))
        return self.filter(
            Q(exp_year__lt=year) | Q(exp_year=year, exp_month__lte=month),
            expiry_flagged_at__isnull=True,
        )

    def flag_expiring(self, *, now: datetime, within_days: int, **batching) -> BatchResult:
        return run_in_batches(
            self.expiring(now=now, within_days=within_days),
            lambda chunk: chunk.update(expiry_flagged_at=now),
            **batching,
        )


class PaymentCard(models.Model):
    customer_email = models.EmailField()
    brand = models.CharField(max_length=32)
    # The last four digits only: a full card number is never stored here.
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    expiry_flagged_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PaymentCardQuerySet.as_manager()

    class Meta:
        ordering = ["exp_year", "exp_month"]
        indexes = [
            # Consumer: looking up a customer's cards (plain index: no LIKE-pattern twin).
            models.Index(fields=["customer_email"], name="card_customer_email_idx"),
            # Consumer: PaymentCardQuerySet.expiring() (the flag_expiring_cards job).
            models.Index(
                fields=["exp_year", "exp_month"],
                condition=Q(expiry_flagged_at__isnull=True),
                name="card_unflagged_expiry_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(exp_month__gte=1, exp_month__lte=12), name="card_exp_month_valid"
            ),
            models.CheckConstraint(
                condition=Q(last4__regex=r"^[0-9]{4}$"), name="card_last4_four_digits"
            ),
        ]

    def __str__(self):
        return f"{self.brand} •••• {self.last4} ({self.exp_month:02d}/{self.exp_year})"

    @property
    def valid_until(self) -> datetime:
        return card_valid_until(self.exp_year, self.exp_month)


class CheckoutSessionQuerySet(models.QuerySet):
    def stale(self, *, now: datetime, older_than_days: int):
        """Not completed and not updated for ``older_than_days`` days (the boundary is stale)."""
        return self.exclude(status=CheckoutSession.Status.COMPLETED).filter(
            updated_at__lte=days_ago(now, older_than_days)
        )

    def delete_stale(self, *, now: datetime, older_than_days: int, **batching) -> BatchResult:
        # No signals or cascades point at CheckoutSession, so Django deletes each batch with
        # one DELETE statement instead of collecting rows first.
        return run_in_batches(
            self.stale(now=now, older_than_days=older_than_days),
            lambda chunk: chunk.delete()[0],
            **batching,
        )


class CheckoutSession(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETED = "completed"
        ABANDONED = "abandoned"

    customer_email = models.EmailField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CheckoutSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            # Consumer: CheckoutSessionQuerySet.stale() (the delete_stale_checkouts job).
            models.Index(
                fields=["updated_at"],
                condition=~Q(status="completed"),
                name="checkout_unfinished_idx",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["open", "completed", "abandoned"]),
                name="checkout_status_valid",
            ),
        ]

    def __str__(self):
        return f"checkout {self.pk} ({self.status})"
