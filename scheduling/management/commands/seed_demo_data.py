import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from scheduling.billing import demo
from scheduling.billing.models import CheckoutSession, Coupon, PaymentCard


def fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise CommandError(f"--due-fraction {value!r} is not a number") from None
    if not 0 <= number <= 1:
        raise CommandError(f"--due-fraction must be between 0 and 1, got {number}")
    return number


def count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a whole number of rows") from None
    if number < 0:
        raise CommandError(f"a row count cannot be negative, got {number}")
    return number


class Command(BaseCommand):
    help = (
        "Create demo coupons, payment cards and checkout sessions with set-based SQL, some due "
        "for each job. Adds to what is there (coupon codes never collide)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--coupons", type=count, default=10_000, help="Coupons to create.")
        parser.add_argument("--cards", type=count, default=10_000, help="Payment cards to create.")
        parser.add_argument(
            "--checkouts", type=count, default=10_000, help="Checkout sessions to create."
        )
        parser.add_argument(
            "--due-fraction",
            type=fraction,
            default=0.1,
            help="Share of each table (0..1) due for its job right away (default 0.1).",
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing if any coupon, card or checkout session exists (first run only).",
        )

    def handle(self, *args, coupons, cards, checkouts, due_fraction, if_empty, **options):
        if if_empty and (
            Coupon.objects.exists()
            or PaymentCard.objects.exists()
            or CheckoutSession.objects.exists()
        ):
            self.stdout.write("Demo data already present; nothing created.")
            return
        now = timezone.now()
        for label, n, seed in (
            ("coupons", coupons, demo.seed_coupons),
            ("payment cards", cards, demo.seed_cards),
            ("checkout sessions", checkouts, demo.seed_checkouts),
        ):
            if not n:
                continue
            started = time.monotonic()
            due = round(n * due_fraction)
            seed(n, due, now)
            self.stdout.write(
                f"created {n} {label} ({due} due) in {time.monotonic() - started:.2f}s"
            )
