"""End to end: real `celery worker` and `celery beat` processes run the jobs from the database
schedules, and an admin edit changes what the running beat does, without a restart.

Runs twice: against PostgreSQL + Redis, and on the embedded default (SQLite + filesystem broker).
"""

import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from tests.support import scenario
from tests.support.processes import ROOT, beat, eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Embedded:
    """Scenario steps run in a subprocess on the embedded default (no servers at all)."""

    def __init__(self, tmp_path):
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SECRET_KEY"}
        }
        env.update(VAR_DIR=str(tmp_path / "var"), DJANGO_DEBUG="1", LOG_FORMAT="json")
        self.env = env
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
        )

    def __call__(self, step, **kwargs):
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.scenario", step, json.dumps(kwargs)],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(params=[InProcess, Embedded], ids=["postgres-redis", "embedded"])
def backend(request, tmp_path):
    return request.param(tmp_path)


def test_beat_dispatches_jobs_and_follows_admin_edits(backend, tmp_path):
    prepared = backend("prepare", coupons=30, cards=25)
    assert prepared == {"due_coupons": 30, "due_cards": 25}

    hostname = f"e2e-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    services = [
        worker(backend.env, tmp_path, hostname).start(),
        beat(backend.env, tmp_path).start(),
    ]
    try:
        wait_for_ping(backend.env, hostname)

        # 1. Beat sends expire-coupons every second from the database schedule; the worker runs it.
        eventually(
            lambda: backend("state"),
            lambda s: s["due_coupons"] == 0,
            60,
            "scheduled expire_coupons to expire the due coupons",
            services,
        )
        results = backend("state")["results"]
        assert ["scheduling.expire_coupons", "expire-coupons", "SUCCESS"] in results
        # flag-expiring-cards is on a yearly crontab: beat has not sent it.
        assert backend("state")["unflagged_due_cards"] == 25

        # 2. An admin moves flag-expiring-cards onto a one-second interval; the running beat
        #    picks the edit up without a restart.
        edit = backend("admin_set_interval", name="flag-expiring-cards", seconds=1)
        assert edit == {"status": 302, "errors": {}}
        eventually(
            lambda: backend("state"),
            lambda s: s["unflagged_due_cards"] == 0,
            30,
            "beat to apply the admin edit and flag the cards",
            services,
        )

        # 3. The edit survives a re-seed and a beat restart.
        assert backend("seed")["flag-expiring-cards"] == "kept"
        assert services[1].stop() == 0
        services[1] = beat(backend.env, tmp_path).start()
        backend("add_due_rows", cards=5)
        eventually(
            lambda: backend("state"),
            lambda s: s["unflagged_due_cards"] == 0,
            30,
            "restarted beat to keep the edited schedule",
            services,
        )
        assert backend("state")["flag_schedule"] == "every second"
        assert ["scheduling.flag_expiring_cards", "flag-expiring-cards", "SUCCESS"] in backend(
            "state"
        )["results"]
    finally:
        codes = [s.stop() for s in services]
    assert codes == [0, 0], "\n".join(s.log_tail() for s in services)


def test_soft_time_limit_in_a_real_worker_ends_a_partial_run(tmp_path):
    from django_celery_results.models import TaskResult

    from scheduling.billing.models import Coupon
    from scheduling.billing.tasks import expire_coupons

    scenario.add_due_rows(coupons=20_000)
    env = InProcess(tmp_path).env | {"SCHEDULING_BATCH_SIZE": "5", "SCHEDULING_BATCH_MAX": "5"}
    hostname = f"e2e-soft-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    service = worker(env, tmp_path, hostname).start()
    try:
        wait_for_ping(env, hostname)
        # Time limits travel in the message: the sender's (here: explicit) limits apply.
        result = expire_coupons.apply_async(soft_time_limit=1, time_limit=20).get(timeout=60)
    finally:
        assert service.stop() == 0, service.log_tail()
    assert result["partial"] is True
    expired = Coupon.objects.filter(status="expired").count()
    assert 0 < expired < 20_000
    assert result["expired"] == expired
    assert TaskResult.objects.get(task_name="scheduling.expire_coupons").status == "SUCCESS"
