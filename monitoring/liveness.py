"""One evaluation of "is background work really running?", shared by
``manage.py check_scheduler_liveness`` and ``/health/scheduler``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from monitoring.status import ALERTING, beat_state, job_statuses, live_workers


@dataclass
class Liveness:
    problems: list[str] = field(default_factory=list)
    beat: dict = field(default_factory=dict)
    jobs: list[dict] = field(default_factory=list)
    workers: list[str] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"status": "ok" if self.ok else "fail", "problems": self.problems,
                "beat": self.beat, "jobs": self.jobs, "workers": self.workers}


def evaluate(now: dt.datetime, *, max_age: float | None = None, jobs: bool = True,
             workers: bool = False, outcomes: bool = True) -> Liveness:
    result = Liveness()
    beat = beat_state(now, max_age=max_age)
    result.problems.extend(f"beat: {p}" for p in beat.problems)
    result.beat = {
        "leader": beat.leader, "heartbeat_age": beat.heartbeat_age,
        "loaded_version": beat.loaded_version, "current_version": beat.current_version,
        "standbys": beat.standbys,
    }
    if jobs:
        unconsumed: dict[str, list[str]] = {}
        for status in job_statuses(now, outcomes=outcomes):
            result.jobs.append(status.as_dict())
            if status.cause == "route":  # one line per route, naming its jobs
                unconsumed.setdefault(status.reason, []).append(status.name)
            elif status.status in ALERTING:
                result.problems.append(f"job {status.name}: {status.status}: {status.reason}")
        for reason, names in sorted(unconsumed.items()):
            shown = ", ".join(sorted(names)[:10]) + (
                f" and {len(names) - 10} more" if len(names) > 10 else "")
            result.problems.insert(len(beat.problems), f"workers: {reason} (jobs: {shown})")
    if workers:
        live = live_workers(now)
        result.workers = [worker.hostname for worker in live]
        if not live:
            result.problems.append(
                "workers: no live worker in the registry (none started, or none has refreshed "
                "its row within SCHEDULING_WORKER_STALE)")
    return result
