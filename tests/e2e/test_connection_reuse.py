"""A worker reuses its PostgreSQL connection across tasks, and a connection broken under it (the
backend terminated, as a PostgreSQL restart or failover does) is replaced before the next task
runs, never handed to it."""

import socket
import uuid

import pytest
from django.db import connection
from django_celery_results.models import TaskResult

from tests.support import probe
from tests.support.processes import eventually, wait_for_ping, worker
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_connection_is_reused_and_a_broken_one_is_replaced_before_a_task(tmp_path):
    env = InProcess(tmp_path).env
    hostname = f"reuse-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    service = worker(env, tmp_path, hostname, app="tests.support.probe").start()

    def run() -> tuple[str, int | None]:
        task_id = probe.db_backend.delay().id
        row = eventually(lambda: TaskResult.objects.filter(task_id=task_id).exclude(
            status__in=["PENDING", "STARTED"]).first(), bool, 30, "the task to end", [service])
        return row.status, (int(row.result) if row.status == "SUCCESS" else None)

    try:
        wait_for_ping(env, hostname)
        first, second = run(), run()
        assert first[0] == second[0] == "SUCCESS"
        assert first[1] == second[1]  # one connection for both tasks (Celery alone: two)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [second[1]])
        third = run()
        assert third[0] == "SUCCESS", third  # the health check replaced it before the task
        assert third[1] != second[1]
    finally:
        service.stop()
