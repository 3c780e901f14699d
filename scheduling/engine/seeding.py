"""Seed the declared default schedules into django-celery-beat's tables.

Used by ``manage.py seed_schedules`` and by data migration 0002. It takes the model classes as
arguments so the migration can pass its historical models; it uses nothing but plain fields.
"""

import json
from dataclasses import dataclass

from django.utils import timezone

from scheduling.schedules import DEFAULT_SCHEDULES, DEFAULTS_BY_NAME

CREATED, KEPT, RESTORED = "created", "kept", "restored"


@dataclass(frozen=True)
class SeedModels:
    PeriodicTask: type
    CrontabSchedule: type
    PeriodicTasks: type

    @classmethod
    def live(cls):
        from django_celery_beat.models import CrontabSchedule, PeriodicTask, PeriodicTasks

        return cls(PeriodicTask, CrontabSchedule, PeriodicTasks)


class UnknownSchedule(ValueError):
    pass


def seed_schedules(*, restore=(), models: SeedModels | None = None) -> list[tuple[str, str]]:
    """Create missing default rows; overwrite only the rows named in ``restore``.

    Returns ``(name, action)`` pairs, action one of created / kept / restored. Bumps
    django-celery-beat's change counter when anything was written, so a running beat reloads
    (historical models in a migration send no signals).
    """
    models = models or SeedModels.live()
    unknown = sorted(set(restore) - DEFAULTS_BY_NAME.keys())
    if unknown:
        raise UnknownSchedule(
            f"no default schedule named {', '.join(unknown)}; "
            f"declared: {', '.join(DEFAULTS_BY_NAME)}"
        )
    report = []
    for default in DEFAULT_SCHEDULES:
        # Crontab rows have no unique constraint; an admin may have made an identical one.
        fields = default.crontab_fields()
        crontab = models.CrontabSchedule.objects.filter(**fields).order_by("pk").first()
        if crontab is None:
            crontab = models.CrontabSchedule.objects.create(**fields)
        values = {
            "task": default.task,
            "crontab": crontab,
            "interval": None,
            "solar": None,
            "clocked": None,
            "args": "[]",
            "kwargs": json.dumps(default.kwargs),
            "description": default.description,
            "enabled": True,
            "one_off": False,
        }
        existing = models.PeriodicTask.objects.filter(name=default.name).first()
        if existing is None:
            models.PeriodicTask.objects.create(name=default.name, **values)
            report.append((default.name, CREATED))
        elif default.name in restore:
            models.PeriodicTask.objects.filter(pk=existing.pk).update(**values)
            report.append((default.name, RESTORED))
        else:
            report.append((default.name, KEPT))
    if any(action != KEPT for _, action in report):
        models.PeriodicTasks.objects.update_or_create(
            ident=1, defaults={"last_update": timezone.now()}
        )
    return report
