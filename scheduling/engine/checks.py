"""System checks (``manage.py check``): the scheduler must be ours and the clock UTC.

scheduling.E001  CELERY_BEAT_SCHEDULE is not empty (it would re-impose itself over admin edits).
scheduling.E002  beat is not configured with scheduling.beat:LeasedScheduler.
scheduling.E003  TIME_ZONE is not UTC.
scheduling.W001  an enabled periodic task names a task this code base does not register.
scheduling.W002  an enabled periodic task beat cannot send as stored (its args / kwargs /
                 headers, arguments its task refuses, or a schedule that cannot be computed).
"""

from django.conf import settings
from django.core import checks
from django.db import DatabaseError

SCHEDULER = "scheduling.beat:LeasedScheduler"


@checks.register()
def check_beat_configuration(app_configs=None, **kwargs):
    errors = []
    if getattr(settings, "CELERY_BEAT_SCHEDULE", None):
        errors.append(
            checks.Error(
                "CELERY_BEAT_SCHEDULE is not empty.",
                hint="Schedules are data: declare defaults in scheduling/schedules.py and run "
                "manage.py seed_schedules; django-celery-beat would re-impose this setting over "
                "admin edits on every beat start.",
                id="scheduling.E001",
            )
        )
    if getattr(settings, "CELERY_BEAT_SCHEDULER", None) != SCHEDULER:
        errors.append(
            checks.Error(
                f"CELERY_BEAT_SCHEDULER is {getattr(settings, 'CELERY_BEAT_SCHEDULER', None)!r}.",
                hint=f"Use {SCHEDULER!r}: without its lease two beats send every job twice.",
                id="scheduling.E002",
            )
        )
    if settings.TIME_ZONE != "UTC":
        errors.append(
            checks.Error(
                f"TIME_ZONE is {settings.TIME_ZONE!r}.",
                hint="Keep TIME_ZONE = 'UTC'; give a crontab its own timezone in the admin.",
                id="scheduling.E003",
            )
        )
    return errors


def registered_task_names() -> set[str]:
    """Task names this code base registers: every installed app's ``tasks`` module, imported the
    way the worker's autodiscovery does, plus Celery's built-ins. (Not through
    ``loader.import_default_modules()``: Celery's Django fixup runs the system checks from there,
    which would recurse.)"""
    from importlib import import_module
    from importlib.util import find_spec

    from celery import current_app
    from django.apps import apps

    for config in apps.get_app_configs():
        if find_spec(f"{config.name}.tasks") is not None:
            import_module(f"{config.name}.tasks")
    return set(current_app.tasks)


@checks.register()
def check_periodic_task_names(app_configs=None, **kwargs):
    from django_celery_beat.models import PeriodicTask

    try:
        names = list(PeriodicTask.objects.enabled().values_list("name", "task"))
    except DatabaseError:
        return []  # no database yet (before migrate): nothing to compare
    known = registered_task_names()
    return [
        checks.Warning(
            f"Enabled periodic task {name!r} names task {task!r}, which no worker of this code "
            "base registers; beat would send it and no worker would run it.",
            hint="Fix the task name in the admin, or pause the schedule.",
            obj=name,
            id="scheduling.W001",
        )
        for name, task in names
        if task not in known
    ]


@checks.register()
def check_periodic_task_rows(app_configs=None, **kwargs):
    """Rows made outside the admin (scripts, data migrations) that beat would fail on."""
    from django_celery_beat.models import PeriodicTask

    from scheduling.engine.services import row_errors

    try:
        models = list(PeriodicTask.objects.enabled().select_related(
            "interval", "crontab", "solar", "clocked"))
    except DatabaseError:
        return []
    warnings = []
    for model in models:
        problems = [f"{field}: {message}" for field, message in row_errors(model).items()]
        if problems:
            warnings.append(checks.Warning(
                f"Enabled periodic task {model.name!r} cannot be sent as stored: "
                + "; ".join(problems),
                hint="Correct the row in the admin (it refuses these values); until then beat "
                "records each of its slots as failed with this reason.",
                obj=model.name, id="scheduling.W002"))
    return warnings
