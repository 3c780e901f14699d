"""Seed the default job schedules (scheduling/schedules.py) into django-celery-beat's tables.

Creates only what is missing, like `manage.py seed_schedules`; never overwrites an edited row.
"""

from django.db import migrations


def seed(apps, schema_editor):
    from scheduling.engine.seeding import SeedModels, seed_schedules

    seed_schedules(
        models=SeedModels(
            PeriodicTask=apps.get_model("django_celery_beat", "PeriodicTask"),
            CrontabSchedule=apps.get_model("django_celery_beat", "CrontabSchedule"),
            PeriodicTasks=apps.get_model("django_celery_beat", "PeriodicTasks"),
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
