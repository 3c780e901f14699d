"""``manage.py check_deployment [PATH ...]``: show me the process that runs it. For every enabled
periodic job, the process definition that schedules it and the worker definitions that consume its
queue, in each deployment description; exit 1 with one line per problem, 2 on bad usage or an
unreadable file."""

import json
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from monitoring import deployment

DEFAULT_PATHS = ("docker-compose.yml", "Procfile", "deploy/kubernetes")


class Command(BaseCommand):
    help = (
        "Read deployment descriptions (compose files, Procfiles, Kubernetes manifest folders) "
        "and check that a beat schedules the enabled periodic jobs and that a worker consumes "
        "every queue they route to. Exit 1 with one line per problem."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", metavar="PATH",
                            help=f"Descriptions to read (default: {', '.join(DEFAULT_PATHS)}, "
                                 "those that exist, relative to the project root).")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args, paths, **options):
        from project.celery import app

        if paths:
            targets = [Path(p) for p in paths]
            missing = [str(p) for p in targets if not p.exists()]
            if missing:
                self.stderr.write(f"error: no such file or folder: {', '.join(missing)}")
                sys.exit(2)
        else:
            targets = [settings.BASE_DIR / p for p in DEFAULT_PATHS
                       if (settings.BASE_DIR / p).exists()]
        default_queue = app.conf.task_default_queue
        described = {}
        for target in targets:
            label = self.label(target)
            try:
                processes = deployment.read(target, default_queue)
            except deployment.UnreadableDescription as exc:
                self.stderr.write(f"error: {str(exc).replace(str(target), label, 1)}")
                sys.exit(2)
            for process in processes:  # name them as the user does
                process.source = process.source.replace(str(target), label, 1)
            described[label] = processes
        jobs, source = deployment.enabled_jobs(app)
        scheduler = settings.CELERY_BEAT_SCHEDULER
        problems = [line for name, processes in described.items()
                    for line in deployment.problems(name, processes, jobs, scheduler)]
        report = {name: self.per_job(processes, jobs) for name, processes in described.items()}
        if options["json"]:
            self.stdout.write(json.dumps({"status": "fail" if problems else "ok",
                                          "jobs_from": source, "descriptions": report,
                                          "problems": problems}))
        else:
            self.stdout.write(f"{len(jobs)} enabled periodic job(s), from {source}")
            for name, rows in report.items():
                self.stdout.write(f"{name}:")
                for row in rows:
                    self.stdout.write(
                        f"  {row['job']} ({row['task']} -> queue {row['queue']}): scheduled by "
                        f"{', '.join(row['scheduled_by']) or 'NOTHING'}; consumed by "
                        f"{', '.join(row['consumed_by']) or 'NOTHING'}")
            for line in problems:
                self.stdout.write(line)
        if problems:
            sys.exit(1)

    @staticmethod
    def label(path: Path) -> str:
        try:
            return str(path.resolve().relative_to(settings.BASE_DIR))
        except ValueError:
            return str(path)

    @staticmethod
    def per_job(processes, jobs) -> list[dict]:
        beats = [p.source for p in processes if p.role == "beat"]
        return [{"job": job.name, "task": job.task, "queue": job.queue, "scheduled_by": beats,
                 "consumed_by": [p.source for p in processes
                                 if p.role == "worker" and job.queue in p.queues]}
                for job in jobs]
