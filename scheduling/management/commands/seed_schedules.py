from django.core.management.base import BaseCommand, CommandError

from scheduling.engine.seeding import UnknownSchedule, seed_schedules
from scheduling.schedules import DEFAULTS_BY_NAME


class Command(BaseCommand):
    help = (
        "Create the default job schedules that are missing from django-celery-beat's tables. "
        "Rows that exist are kept as they are (an admin's edits win); --restore NAME puts one "
        "back to its declared default."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--restore",
            action="append",
            default=[],
            metavar="NAME",
            help=f"Overwrite this schedule with its default (repeatable). Names: "
            f"{', '.join(DEFAULTS_BY_NAME)}.",
        )
        parser.add_argument(
            "--restore-all", action="store_true", help="Overwrite every schedule with its default."
        )

    def handle(self, *args, restore, restore_all, **options):
        names = list(DEFAULTS_BY_NAME) if restore_all else restore
        try:
            report = seed_schedules(restore=names)
        except UnknownSchedule as exc:
            raise CommandError(str(exc)) from None
        for name, action in report:
            self.stdout.write(f"{action:>9}  {name}")
        created = sum(action == "created" for _, action in report)
        restored = sum(action == "restored" for _, action in report)
        kept = len(report) - created - restored
        self.stdout.write(f"{created} created, {restored} restored, {kept} kept as they are")
