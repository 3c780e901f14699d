"""``manage.py check_scheduler_liveness``: exit 0 when scheduled work is really running, 1 with
one line per problem when it is not, 2 on bad usage. For compose healthchecks, cron, Kubernetes
and people."""

import json
import sys

from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone

from monitoring.liveness import evaluate


class Command(BaseCommand):
    help = (
        "Exit 0 if a beat holds a fresh lease and heartbeat on the current schedule and no "
        "enabled job is late, queued or failing; else print one line per problem and exit 1."
    )
    requires_system_checks = []  # a probe: answer fast, touch only what it checks

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the full result as JSON.")
        parser.add_argument(
            "--max-age", type=float, default=None, metavar="SECONDS",
            help="Oldest acceptable beat heartbeat (default: 3 x SCHEDULING_BEAT_TICK).",
        )
        parser.add_argument("--no-jobs", action="store_true",
                            help="Check the beat only, not each job's status.")
        parser.add_argument("--workers", action="store_true",
                            help="Also require a live worker in the worker registry.")
        parser.add_argument("--alert", action="store_true",
                            help="Also send notifications for state changes (see MONITORING_*).")

    def handle(self, *args, **options):
        if options["max_age"] is not None and options["max_age"] <= 0:
            self.stderr.write("--max-age must be a positive number of seconds")
            sys.exit(2)
        # A probe must answer quickly even when the database does not.
        if connection.vendor == "postgresql":
            connection.settings_dict.setdefault("OPTIONS", {})["connect_timeout"] = 2
        now = timezone.now()
        try:
            result = evaluate(now, max_age=options["max_age"], jobs=not options["no_jobs"],
                              workers=options["workers"])
        except Exception as exc:  # the database (or anything it needs) is unreachable
            result = None
            problem = f"database: unreachable or failing ({type(exc).__name__}: {exc})".strip()
            problem = problem.splitlines()[0]
        if options["alert"] and result is not None:
            from monitoring.alerts import evaluate_alerts

            evaluate_alerts(now, liveness=result)
        if result is None:
            if options["json"]:
                self.stdout.write(json.dumps({"status": "fail", "problems": [problem]}))
            else:
                self.stdout.write(problem)
            sys.exit(1)
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), default=str))
        elif result.ok:
            self.stdout.write(f"ok: beat {result.beat['leader']} leading, heartbeat "
                              f"{result.beat['heartbeat_age']} s ago")
        else:
            for line in result.problems:
                self.stdout.write(line)
        if not result.ok:
            sys.exit(1)
