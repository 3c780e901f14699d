"""``/metrics`` in Prometheus text format (prometheus-client), built per scrape from the
database into a private registry (nothing global, so several web processes agree)."""

from __future__ import annotations

from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
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


class _Scrape:
    """The metric families of one scrape (``GaugeMetricFamily``: building labelled children of
    ``Gauge`` costs ~10 µs a series, too slow for 5,000 jobs x 14 series)."""

    def __init__(self):
        self.families: list[GaugeMetricFamily] = []

    def gauge(self, name: str, documentation: str, labels=(), value=None) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation,
                                   labels=list(labels) if labels else None)
        if value is not None:
            family.add_metric([], value)
        self.families.append(family)
        return family

    def collect(self):
        return iter(self.families)


def render_metrics() -> tuple[bytes, str]:
    from deadletters.models import DeadLetter

    now = timezone.now()
    scrape = _Scrape()
    last_success = scrape.gauge("billing_job_last_success_timestamp_seconds",
                                "When the job last succeeded (Unix time).", ["job"])
    status = scrape.gauge("billing_job_status", "1 for the job's current status.",
                          ["job", "status"])
    duration = scrape.gauge("billing_job_last_duration_seconds",
                            "Duration of the last finished run.", ["job"])
    stage = scrape.gauge("billing_job_stage", "1 for each job, labelled with its current status "
                         "(one series per job; the stuck stage when red).", ["job", "stage"])
    values = Status.values
    for job in job_statuses(now, outcomes=False):
        if job.last_success:
            last_success.add_metric([job.name], job.last_success.timestamp())
        if job.last_duration_ms is not None:
            duration.add_metric([job.name], job.last_duration_ms / 1000)
        stage.add_metric([job.name, job.status], 1)
        for name in values:
            status.add_metric([job.name, name], 1 if job.status == name else 0)
    scrape.gauge("billing_runs_lost", "Ledger rows of runs that could never finish (state lost).",
                 value=Dispatch.objects.filter(state=Dispatch.State.LOST).count())
    beat = beat_state(now)
    scrape.gauge("billing_beat_heartbeat_age_seconds", "Age of the newest beat heartbeat.",
                 value=beat.heartbeat_age if beat.heartbeat_age is not None else -1)
    scrape.gauge("billing_beat_leader", "1 when a beat holds a fresh lease.",
                 value=1 if beat.leader and beat.ok else 0)
    scrape.gauge("billing_jobs_unscheduled",
                 "Enabled periodic jobs no process schedules (no beat alive); 0 while one is.",
                 value=unscheduled_jobs(beat))
    stats = DeadLetter.objects.pending_stats(now=now)
    scrape.gauge("billing_dead_letters_pending", "Pending dead letters.", value=stats["pending"])
    scrape.gauge("billing_dead_letters_oldest_pending_age_seconds",
                 "Age of the oldest pending dead letter (0 when none).",
                 value=stats["oldest_pending_age"] or 0)
    queue = scrape.gauge("billing_queue_length", "Messages waiting in a broker queue.", ["queue"])
    for name, length in health.queue_lengths().items():
        if length is not None:
            queue.add_metric([name], length)
    workers = live_workers(now)
    scrape.gauge("billing_workers_online", "Live workers in the worker registry.",
                 value=len(workers))
    per_queue = scrape.gauge("billing_workers", "Live workers consuming a queue.", ["queue"])
    for name, count in workers_per_queue(workers).items():
        per_queue.add_metric([name], count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(scrape)
    return generate_latest(registry), CONTENT_TYPE_LATEST
