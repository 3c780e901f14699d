"""The scheduler engine's public surface: what the beat process, ``monitoring``, ``deadletters``
and the admin use. Everything else under ``scheduling.engine`` is private to it (import-linter
keeps it so).

``CELERY_BEAT_SCHEDULER = "scheduling.beat:LeasedScheduler"``.
"""

from scheduling.engine import services
from scheduling.engine.checks import SCHEDULER, registered_task_names
from scheduling.engine.consumers import Route, queue_for, route_of
from scheduling.engine.dispatch import CannotSend, field_errors, message_for
from scheduling.engine.lease import current_lease
from scheduling.engine.models import (
    BeatHeartbeat,
    BeatLease,
    Dispatch,
    JobPolicy,
    ScheduleChange,
    ScheduleVersion,
    WorkerProcess,
)
from scheduling.engine.planner import anchor, policy_of, schedule_in_words, upcoming_runs
from scheduling.engine.scheduler import LeasedScheduler
from scheduling.engine.slots import Slot, latest_due, next_slot, upcoming

__all__ = [
    "SCHEDULER", "BeatHeartbeat", "BeatLease", "CannotSend", "Dispatch", "JobPolicy",
    "LeasedScheduler", "Route", "ScheduleChange", "ScheduleVersion", "Slot", "WorkerProcess",
    "anchor", "current_lease", "field_errors", "latest_due", "message_for", "next_slot",
    "policy_of", "queue_for", "registered_task_names", "route_of", "schedule_in_words",
    "services", "upcoming", "upcoming_runs",
]
