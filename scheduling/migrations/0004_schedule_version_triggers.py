"""Database triggers that bump ScheduleVersion on every schedule change, however it is made.

django-celery-beat notices a change only when ``Model.save()`` bumps its ``PeriodicTasks`` row;
``QuerySet.update()``, raw SQL and data migrations do not, and a running beat would keep the old
schedule for minutes. These triggers live on the tables themselves. Updates that only touch the
bookkeeping columns beat writes after a dispatch (``last_run_at``, ``total_run_count``,
``date_changed``, ``no_changes``) do not count as a change.
"""

from django.db import migrations

BOOKKEEPING = {"last_run_at", "total_run_count", "date_changed", "no_changes"}
ANY_CHANGE = [
    ("django_celery_beat", "CrontabSchedule"),
    ("django_celery_beat", "IntervalSchedule"),
    ("django_celery_beat", "SolarSchedule"),
    ("django_celery_beat", "ClockedSchedule"),
    ("scheduling", "JobPolicy"),
]
VERSION_TABLE = "scheduling_scheduleversion"


def _tables(apps):
    periodic = apps.get_model("django_celery_beat", "PeriodicTask")._meta
    watched = [f.column for f in periodic.concrete_fields if f.column not in BOOKKEEPING]
    others = [apps.get_model(app, model)._meta.db_table for app, model in ANY_CHANGE]
    return periodic.db_table, watched, others


def _postgres(table, watched, others):
    bump = (
        f"INSERT INTO {VERSION_TABLE} (id, version, changed_at) VALUES (1, 1, now()) "
        f"ON CONFLICT (id) DO UPDATE SET version = {VERSION_TABLE}.version + 1, "
        "changed_at = now()"
    )
    yield (
        "CREATE OR REPLACE FUNCTION scheduling_bump_schedule_version() RETURNS trigger AS $$ "
        f"BEGIN {bump}; RETURN NULL; END $$ LANGUAGE plpgsql"
    )
    old = ", ".join(f'OLD."{c}"' for c in watched)
    new = ", ".join(f'NEW."{c}"' for c in watched)
    yield (
        f"CREATE TRIGGER scheduling_version_update AFTER UPDATE ON {table} FOR EACH ROW "
        f"WHEN (({old}) IS DISTINCT FROM ({new})) "
        "EXECUTE FUNCTION scheduling_bump_schedule_version()"
    )
    for t in [table, *others]:
        events = "INSERT OR DELETE OR TRUNCATE" if t == table else "INSERT OR UPDATE OR DELETE OR TRUNCATE"
        yield (
            f"CREATE TRIGGER scheduling_version_{'write' if t == table else 'any'} "
            f"AFTER {events} ON {t} FOR EACH STATEMENT "
            "EXECUTE FUNCTION scheduling_bump_schedule_version()"
        )


def _sqlite(table, watched, others):
    bump = (
        f"INSERT INTO {VERSION_TABLE} (id, version, changed_at) "
        "VALUES (1, 1, strftime('%Y-%m-%d %H:%M:%f', 'now')) "
        f"ON CONFLICT (id) DO UPDATE SET version = {VERSION_TABLE}.version + 1, "
        "changed_at = excluded.changed_at;"
    )
    changed = " OR ".join(f'OLD."{c}" IS NOT NEW."{c}"' for c in watched)
    yield (
        f"CREATE TRIGGER scheduling_version_{table}_update AFTER UPDATE ON {table} "
        f"WHEN {changed} BEGIN {bump} END"
    )
    for t in [table, *others]:
        events = ["INSERT", "DELETE"] if t == table else ["INSERT", "UPDATE", "DELETE"]
        for event in events:
            yield (
                f"CREATE TRIGGER scheduling_version_{t}_{event.lower()} AFTER {event} ON {t} "
                f"BEGIN {bump} END"
            )


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    builders = {"postgresql": _postgres, "sqlite": _sqlite}
    if vendor not in builders:
        raise RuntimeError(f"schedule version triggers are not written for {vendor}")
    for statement in builders[vendor](*_tables(apps)):
        schema_editor.execute(statement)
    ScheduleVersion = apps.get_model("scheduling", "ScheduleVersion")
    ScheduleVersion.objects.get_or_create(pk=1, defaults={"version": 1})


def drop_triggers(apps, schema_editor):
    table, _, others = _tables(apps)
    if schema_editor.connection.vendor == "postgresql":
        for t in [table, *others]:
            for name in ("scheduling_version_update", "scheduling_version_write",
                         "scheduling_version_any"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {t}")
        schema_editor.execute("DROP FUNCTION IF EXISTS scheduling_bump_schedule_version()")
    else:
        for t in [table, *others]:
            for event in ("update", "insert", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS scheduling_version_{t}_{event}")


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0003_scheduler_state"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
