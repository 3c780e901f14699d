"""Who keeps the time in a deployment description: read docker compose files, Procfiles and
Kubernetes manifests into process definitions, and compare them with the queues the enabled
periodic jobs route to.

A *process definition* is one service / Procfile line / container: its celery role (beat or
worker), the queues a worker consumes (``-Q``; the default queue without it), the
scheduler class a beat uses (``-S``), and whether it has a liveness probe. The problems found:
no beat; a beat with another scheduler class (no lease: two of them send every job twice); a
worker with ``-B`` (an embedded beat per worker); a queue an enabled job routes to that no worker
consumes; a beat without a liveness probe where the format has probes (compose, Kubernetes).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scheduling.beat import SCHEDULER as OUR_SCHEDULER

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


class UnreadableDescription(ValueError):
    """A file that cannot be read or parsed as the format its name says."""


@dataclass
class Process:
    source: str  # "docker-compose.yml:beat", "deploy/kubernetes/beat.yaml:billing-beat/beat"
    role: str  # "beat", "worker" or "other"
    queues: list[str] = field(default_factory=list)
    scheduler: str | None = None
    embedded_beat: bool = False
    probe: bool | None = None  # None: the format has no probes (Procfile)


@dataclass
class Job:
    name: str
    task: str
    queue: str


# --- reading descriptions --------------------------------------------------------------------
def read(path: Path, default_queue: str) -> list[Process]:
    """The process definitions of one description (a file, or a folder of manifests)."""
    try:
        return _read(path, default_queue)
    except (ValueError, TypeError, AttributeError) as exc:  # unbalanced quotes, odd shapes
        if isinstance(exc, UnreadableDescription):
            raise
        raise UnreadableDescription(f"{path}: not a description this can read ({exc})") from None


def _read(path: Path, default_queue: str) -> list[Process]:
    if path.is_dir():
        found = []
        for manifest in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
            found += read_kubernetes(manifest, default_queue)
        return found
    text = _text(path)
    if path.name == "Procfile" or path.name.startswith("Procfile."):
        return read_procfile(path, text, default_queue)
    documents = _yaml(path, text)
    compose = [d for d in documents if isinstance(d, dict) and "services" in d]
    if compose:
        return read_compose(path, compose[0], default_queue)
    return read_kubernetes(path, default_queue, documents)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UnreadableDescription(f"{path}: cannot be read ({exc.strerror})") from None


def _yaml(path: Path, text: str) -> list:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UnreadableDescription(f"{path}: not valid YAML ({exc.problem or exc})") from None


def read_procfile(path: Path, text: str, default_queue: str) -> list[Process]:
    found = []
    for line in text.splitlines():
        name, sep, command = line.partition(":")
        if not sep or line.lstrip().startswith("#"):
            continue
        found.append(classify(f"{path}:{name.strip()}", _split(command), default_queue,
                              probe=None))
    return found


def read_compose(path: Path, document: dict, default_queue: str) -> list[Process]:
    found = []
    for name, service in (document.get("services") or {}).items():
        if not isinstance(service, dict) or service.get("profiles"):
            continue  # a profile service runs only on demand
        found.append(classify(f"{path}:{name}", _split(service.get("command") or []),
                              default_queue, probe=bool(service.get("healthcheck"))))
    return found


def read_kubernetes(path: Path, default_queue: str, documents=None) -> list[Process]:
    if documents is None:
        documents = _yaml(path, _text(path))
    found = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") not in WORKLOADS:
            continue
        pod = _pod_spec(document)
        name = (document.get("metadata") or {}).get("name", "?")
        for container in pod.get("containers") or []:
            argv = [*_split(container.get("command") or []), *_split(container.get("args") or [])]
            found.append(classify(f"{path}:{name}/{container.get('name', '?')}", argv,
                                  default_queue, probe=bool(container.get("livenessProbe"))))
    return found


def _pod_spec(document: dict) -> dict:
    spec = document.get("spec") or {}
    if document.get("kind") == "Pod":
        return spec
    if document.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) or {}


def _split(command) -> list[str]:
    if isinstance(command, str):
        return shlex.split(command)
    return [str(part) for part in command]


def classify(source: str, argv: list[str], default_queue: str, *,
             probe: bool | None = None) -> Process:
    """What ``argv`` runs: a celery worker or beat (also inside ``sh -c "..."``), or other."""
    if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        argv = shlex.split(argv[2].split("&&")[-1])
    names = [Path(word).name for word in argv]
    rest = argv[names.index("celery") + 1:] if "celery" in names else []
    role = next((word for word in rest if word in ("worker", "beat")), "other")
    process = Process(source, role, probe=probe)
    if role == "worker":
        queues = _option(rest, "-Q", "--queues")
        process.queues = queues.split(",") if queues else [default_queue]
        process.embedded_beat = any(w in ("-B", "--beat") for w in rest)
    elif role == "beat":
        process.scheduler = _option(rest, "-S", "--scheduler")
    return process


def _option(words: list[str], short: str, long: str) -> str | None:
    for index, word in enumerate(words):
        if word in (short, long) and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(f"{long}="):
            return word.split("=", 1)[1]
        if word.startswith(short) and len(word) > len(short) and not word.startswith("--"):
            return word[len(short):]
    return None


# --- the comparison ----------------------------------------------------------------------------
def problems(description: str, processes: list[Process], jobs: list[Job],
             configured_scheduler: str) -> list[str]:
    """One line per problem of one description."""
    found = []
    beats = [p for p in processes if p.role == "beat"]
    workers = [p for p in processes if p.role == "worker"]
    if not beats:
        found.append(f"{description}: no beat: the {len(jobs)} enabled periodic job(s) are "
                     "not scheduled by any process")
    for beat in beats:
        scheduler = beat.scheduler or configured_scheduler
        if scheduler != OUR_SCHEDULER:
            found.append(f"{beat.source}: beat uses scheduler {scheduler!r}, without the lease: "
                         f"more than one beat sends every job more than once (use "
                         f"{OUR_SCHEDULER!r})")
        if beat.probe is False:
            found.append(f"{beat.source}: beat has no liveness probe (use "
                         "`manage.py check_scheduler_liveness --no-jobs`)")
    for worker in workers:
        if worker.embedded_beat:
            found.append(f"{worker.source}: worker runs an embedded beat (-B/--beat): every "
                         "replica schedules every job; run beat as its own process")
    consumed = {queue for worker in workers for queue in worker.queues}
    unconsumed: dict[str, list[str]] = {}
    for job in jobs:
        if job.queue not in consumed:
            unconsumed.setdefault(job.queue, []).append(job.name)
    for queue, names in sorted(unconsumed.items()):
        found.append(f"{description}: no worker consumes queue {queue!r}, used by "
                     f"{', '.join(sorted(names))} (start a worker with -Q {queue})")
    return found


def enabled_jobs(app) -> tuple[list[Job], str]:
    """The enabled periodic jobs and their queues, from the database; the declared defaults
    when the database is empty or unreachable. Returns (jobs, where they came from)."""
    from django.db import DatabaseError
    from django_celery_beat.models import PeriodicTask

    try:
        rows = list(PeriodicTask.objects.filter(enabled=True).order_by("name")
                    .values_list("name", "task", "queue", "routing_key"))
        source = "the database"
    except DatabaseError:
        rows, source = [], "the declared defaults (database unreachable)"
    if not rows:
        from scheduling.schedules import DEFAULT_SCHEDULES

        rows = [(d.name, d.task, "", "") for d in DEFAULT_SCHEDULES]
        source = source if source != "the database" else "the declared defaults (no rows)"
    from scheduling.beat import queue_for

    return [Job(name, task, queue_for(app, task, queue, routing_key))
            for name, task, queue, routing_key in rows], source
