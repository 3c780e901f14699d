"""Dead letters from a real worker (PostgreSQL + Redis): every way a task fails for good gives
exactly one dead letter per task id; retries that end in success give none; a poison message is
dead-lettered after DEADLETTERS_MAX_DELIVERIES; requeue from the admin runs end to end."""

import socket
import uuid

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client

from deadletters.models import DeadLetter
from tests.support import probe
from tests.support.processes import eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
RUNS = 3  # each failure, several times


@pytest.fixture
def env(tmp_path):
    return InProcess(tmp_path).env | {"DEADLETTERS_MAX_DELIVERIES": "2"}


@pytest.fixture
def running_worker(env, tmp_path):
    hostname = f"dl-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
    service = worker(env, tmp_path, hostname, app="tests.support.probe", concurrency=2).start()
    wait_for_ping(env, hostname)
    yield service
    assert service.stop() == 0, service.log_tail()


def dead_letters_for(ids):
    return list(DeadLetter.objects.filter(task_id__in=ids))


CASES = [
    # (task, args, expected exception type, expected retries)
    (probe.fail_after_retries, (), "RuntimeError", 2),
    (probe.autoretry_exhausted, (), "ConnectionError", 2),
    (probe.permanent_error, (-5,), "ValueError", 0),
    (probe.hard_time_limit, (), "billiard.exceptions.TimeLimitExceeded", 0),
    (probe.kill_pool_process, (), "billiard.exceptions.WorkerLostError", 0),
    (probe.reject, (), "RuntimeError", 0),
]


def test_each_final_failure_gives_exactly_one_dead_letter(running_worker):
    sent = {
        task.name: [task.apply_async(args).id for _ in range(RUNS)] for task, args, *_ in CASES
    }
    flaky_ids = [probe.flaky.delay(f"probe:flaky:{i}", 2).id for i in range(RUNS)]
    all_ids = [i for ids in sent.values() for i in ids]
    eventually(lambda: len(dead_letters_for(all_ids)), lambda n: n >= len(all_ids), 90,
               "a dead letter for every failed task", [running_worker])
    for task, args, exception_type, retries in CASES:
        rows = dead_letters_for(sent[task.name])
        assert sorted(r.task_id for r in rows) == sorted(sent[task.name]), task.name
        for row in rows:
            assert row.task_name == task.name
            assert row.exception_type == exception_type, (task.name, row.exception_type)
            assert row.retries == retries, (task.name, row.retries)
            assert row.status == "pending"
            assert row.args == list(args)
            assert row.worker.startswith("dl-")
            assert row.queue == "celery"
    permanent = dead_letters_for(sent["tests.permanent_error"])[0]
    assert "amount must be positive, got -5" in permanent.exception_message
    assert "ValueError" in permanent.traceback
    # Retries that end in success: the results say SUCCESS and no dead letter exists.
    for task_id in flaky_ids:
        assert probe.flaky.AsyncResult(task_id).get(timeout=30) == 3
    assert not dead_letters_for(flaky_ids)
    assert DeadLetter.objects.count() == len(all_ids)  # nothing doubled, nothing extra


def test_a_poison_message_is_dead_lettered_instead_of_run_forever(running_worker, env):
    client = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    task_id = probe.poison.delay().id
    row = eventually(lambda: DeadLetter.objects.filter(task_id=task_id).first(), bool, 90,
                     "the poison message to be dead-lettered", [running_worker])
    assert row.exception_type == "deadletters.base.PoisonMessage"
    assert "delivered 3 times" in row.exception_message
    assert int(client.get("probe:poison-runs")) == 2  # ran (and killed its process) twice


def test_sensitive_arguments_are_redacted_and_the_row_not_replayable(running_worker):
    task_id = probe.until_fixed.delay("probe:never", card_number="4242424242424242",
                                      api_token="t0k3n", note="kept").id
    row = eventually(lambda: DeadLetter.objects.filter(task_id=task_id).first(), bool, 30,
                     "the dead letter", [running_worker])
    assert row.kwargs == {"card_number": "[redacted]", "api_token": "[redacted]",
                          "note": "kept"}
    assert not row.replayable and "redacted" in row.not_replayable_reason


def test_requeue_from_the_admin_resolves_or_links_a_new_dead_letter(running_worker, env):
    client = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    admin = get_user_model().objects.create_superuser("ops", "ops@example.invalid", "pw")
    browser = Client()
    browser.force_login(admin)
    changelist = "/admin/deadletters/deadletter/"

    first_id = probe.until_fixed.delay("probe:fix-a").id
    first = eventually(lambda: DeadLetter.objects.filter(task_id=first_id).first(), bool, 30,
                       "the first dead letter", [running_worker])

    # Requeued while still broken: it fails again, and the new dead letter links back.
    response = browser.post(changelist, {"action": "requeue", "_selected_action": [first.pk],
                                         "index": 0}, secure=True)
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == "requeued" and first.requeued_task_id
    second = eventually(
        lambda: DeadLetter.objects.filter(requeued_from=first).first(), bool, 30,
        "the requeued run to fail again", [running_worker])
    assert second.task_id == first.requeued_task_id

    # Fixed, requeued again: it succeeds and the dead letter becomes resolved.
    client.set("probe:fix-a", "fixed")
    browser.post(changelist, {"action": "requeue", "_selected_action": [second.pk],
                              "index": 0}, secure=True)
    eventually(lambda: DeadLetter.objects.get(pk=second.pk).status, lambda s: s == "resolved",
               30, "the requeued run to succeed", [running_worker])
    assert DeadLetter.objects.get(pk=first.pk).status == "requeued"  # its own run failed
