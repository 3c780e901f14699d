"""Celery's autodiscovery imports ``<app>.tasks``: the billing maintenance jobs live in
``scheduling.billing.tasks`` (their stored names, ``scheduling.expire_coupons`` …, are explicit
and do not depend on the module)."""

from scheduling.billing.tasks import (  # noqa: F401
    delete_stale_checkouts,
    expire_coupons,
    flag_expiring_cards,
)
