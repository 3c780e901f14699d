"""The default schedule of every job, declared once.

These are *defaults*: ``seed_schedules`` (and migration 0002) create the rows that are missing
in django-celery-beat's tables and never overwrite one an admin has edited. The running beat
reads the tables, not this file. ``CELERY_BEAT_SCHEDULE`` stays empty on purpose.

Celery's crontab counts day_of_week 0 as Sunday, like Unix cron.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DefaultSchedule:
    name: str  # PeriodicTask.name: the stable key a seed looks rows up by
    task: str
    crontab: dict  # minute, hour, day_of_week, day_of_month, month_of_year (missing = "*")
    kwargs: dict = field(default_factory=dict)
    description: str = ""

    def crontab_fields(self) -> dict:
        fields = dict.fromkeys(
            ("minute", "hour", "day_of_week", "day_of_month", "month_of_year"), "*"
        )
        fields.update(self.crontab)
        return {**fields, "timezone": "UTC"}


DEFAULT_SCHEDULES = (
    DefaultSchedule(
        name="expire-coupons",
        task="scheduling.expire_coupons",
        crontab={"minute": "*"},  # * * * * *  every minute
        description="Active coupons whose expires_at has passed become expired.",
    ),
    DefaultSchedule(
        name="flag-expiring-cards",
        task="scheduling.flag_expiring_cards",
        crontab={"minute": "15"},  # 15 * * * *  at minute 15 of every hour
        kwargs={"within_days": 30},
        description="Flag payment cards whose validity ends within 30 days.",
    ),
    DefaultSchedule(
        name="delete-stale-checkouts",
        task="scheduling.delete_stale_checkouts",
        crontab={"minute": "30", "hour": "3"},  # 30 3 * * *  at 03:30 UTC every day
        kwargs={"older_than_days": 7},
        description="Delete checkout sessions not completed and not updated for 7 days.",
    ),
    DefaultSchedule(
        name="celery.backend_cleanup",
        task="celery.backend_cleanup",
        crontab={"minute": "0", "hour": "4"},  # 0 4 * * *  at 04:00 UTC every day
        description="Delete task results older than CELERY_RESULT_EXPIRES_DAYS.",
    ),
    DefaultSchedule(
        name="prune-dead-letters",
        task="deadletters.prune_dead_letters",
        crontab={"minute": "45", "hour": "4"},  # 45 4 * * *  at 04:45 UTC every day
        description="Delete resolved and ignored dead letters older than "
        "DEADLETTERS_RETENTION_DAYS; pending ones are kept.",
    ),
    DefaultSchedule(
        name="evaluate-alerts",
        task="monitoring.evaluate_alerts",
        crontab={"minute": "*"},  # * * * * *  every minute
        description="Evaluate job and beat status; notify on state changes and new dead letters.",
    ),
    DefaultSchedule(
        name="prune-run-records",
        task="monitoring.prune_run_records",
        crontab={"minute": "50", "hour": "4"},  # 50 4 * * *  at 04:50 UTC every day
        description="Delete dispatch-ledger rows older than MONITORING_RUN_RETENTION_DAYS "
        "(each job's newest row is kept).",
    ),
)

DEFAULTS_BY_NAME = {schedule.name: schedule for schedule in DEFAULT_SCHEDULES}
