"""``/metrics`` in Prometheus text format (prometheus-client), built per scrape from the
database into a private registry (nothing global, so several web processes agree)."""

from __future__ import annotations

from django.utils import timezone
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitoring import health
from monitoring.status import (
    Status,
    beat_state,
    job_statuses,
    live_workers,
    unscheduled_jobs,
    workers_per_queue,
)
from scheduling.beat import Dispatch


def render_metrics() -> tuple[bytes, str]:
    from deadletters.models import DeadLetter

    now = timezone.now()
    registry = CollectorRegistry()
    last_success = Gauge("billing_job_last_success_timestamp_seconds",
                         "When the job last succeeded (Unix time).", ["job"], registry=registry)
    status = Gauge("billing_job_status", "1 for the job's current status.",
                   ["job", "status"], registry=registry)
    duration = Gauge("billing_job_last_duration_seconds", "Duration of the last finished run.",
                     ["job"], registry=registry)
    stage = Gauge("billing_job_stage", "1 for each job, labelled with its current status (one "
                  "series per job; the stuck stage when red).", ["job", "stage"],
                  registry=registry)
    for job in job_statuses(now, outcomes=False):
        if job.last_success:
            last_success.labels(job.name).set(job.last_success.timestamp())
        if job.last_duration_ms is not None:
            duration.labels(job.name).set(job.last_duration_ms / 1000)
        stage.labels(job.name, job.status).set(1)
        for name in Status.values:
            status.labels(job.name, name).set(1 if job.status == name else 0)
    Gauge("billing_runs_lost", "Ledger rows of runs that could never finish (state lost).",
          registry=registry).set(Dispatch.objects.filter(state=Dispatch.State.LOST).count())
    beat = beat_state(now)
    Gauge("billing_beat_heartbeat_age_seconds", "Age of the newest beat heartbeat.",
          registry=registry).set(beat.heartbeat_age if beat.heartbeat_age is not None else -1)
    Gauge("billing_beat_leader", "1 when a beat holds a fresh lease.",
          registry=registry).set(1 if beat.leader and beat.ok else 0)
    Gauge("billing_jobs_unscheduled",
          "Enabled periodic jobs no process schedules (no beat alive); 0 while one is.",
          registry=registry).set(unscheduled_jobs(beat))
    stats = DeadLetter.objects.pending_stats(now=now)
    Gauge("billing_dead_letters_pending", "Pending dead letters.",
          registry=registry).set(stats["pending"])
    Gauge("billing_dead_letters_oldest_pending_age_seconds",
          "Age of the oldest pending dead letter (0 when none).",
          registry=registry).set(stats["oldest_pending_age"] or 0)
    queue = Gauge("billing_queue_length", "Messages waiting in a broker queue.", ["queue"],
                  registry=registry)
    for name, length in health.queue_lengths().items():
        if length is not None:
            queue.labels(name).set(length)
    workers = live_workers(now)
    Gauge("billing_workers_online", "Live workers in the worker registry.",
          registry=registry).set(len(workers))
    per_queue = Gauge("billing_workers", "Live workers consuming a queue.", ["queue"],
                      registry=registry)
    for name, count in workers_per_queue(workers).items():
        per_queue.labels(name).set(count)
    return generate_latest(registry), CONTENT_TYPE_LATEST
