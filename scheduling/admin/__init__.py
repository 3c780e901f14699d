"""The ``scheduling`` admin: the billing rows, the periodic tasks (replacing django-celery-beat's
registrations), their schedules, the ledger and heartbeats, and the audit trail.

``ScheduleAdmin`` is public: another app extends it by registering a subclass in its place
(``monitoring.admin`` adds its thresholds inline that way).
"""

from scheduling.admin import audit, billing, ledger, periodic_tasks, schedules  # noqa: F401
from scheduling.admin.periodic_tasks import ScheduleAdmin

__all__ = ["ScheduleAdmin"]
