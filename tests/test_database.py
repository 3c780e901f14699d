"""``project.database.through_outage``: the writes around a run wait for the database in a
worker, and only there (the whole behaviour, with a real PostgreSQL stopped under a real worker,
is tests/faults/test_database_faults.py)."""

from contextlib import contextmanager

import pytest
from celery import _state
from celery.exceptions import Reject
from django.db import OperationalError, connection, transaction

from deadletters import capture
from deadletters.models import DeadLetter
from project.database import DatabaseUnavailable, through_outage
from scheduling.billing.tasks import expire_coupons
from tests.support.processes import free_port


@contextmanager
def worker_run(task=expire_coupons):
    """What the worker's tracer sets up around a run: the task on the stack, a real request."""
    task.push_request(id="run-1", called_directly=False, is_eager=False)
    _state._task_stack.push(task)
    try:
        yield task
    finally:
        _state._task_stack.pop()
        task.pop_request()


def flaky(failures: int):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= failures:
            raise OperationalError("server closed the connection unexpectedly")
        return len(calls)

    return call


def test_in_a_worker_run_a_lost_connection_is_tried_again_with_growing_pauses():
    pauses = []
    with worker_run():
        assert through_outage(flaky(3), what="x", wait=10, sleep=pauses.append) == 4
    assert pauses == [0.2, 0.4, 0.8]


def test_the_wait_has_a_bound_and_then_says_what_could_not_be_written():
    pauses = []
    with worker_run(), pytest.raises(DatabaseUnavailable, match="for 30 s while writing x"):
        through_outage(flaky(100), what="x", wait=30, sleep=pauses.append,
                       clock=lambda: sum(pauses))
    assert pauses == [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, 5, 5]  # 26.2 s; a 10th would pass 30


def test_outside_a_worker_run_or_inside_a_transaction_it_fails_at_once(db):
    with pytest.raises(OperationalError):
        through_outage(flaky(1), what="x", wait=10, sleep=pytest.fail)
    with worker_run(), transaction.atomic(), pytest.raises(OperationalError):
        through_outage(flaky(1), what="x", wait=10, sleep=pytest.fail)


def test_other_errors_are_not_waited_for():
    def broken():
        raise ValueError("not a connection problem")

    with worker_run(), pytest.raises(ValueError):
        through_outage(broken, what="x", wait=10, sleep=pytest.fail)


@contextmanager
def database_refusing():
    """The default connection pointed at a port nobody listens on: real refused connections."""
    connection.close()
    port = connection.settings_dict["PORT"]
    connection.settings_dict["PORT"] = str(free_port())
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_that_cannot_be_written_puts_the_message_back(settings):
    settings.DB_OUTAGE_WAIT = 1
    with worker_run() as task:
        try:
            raise ValueError("failed for good")
        except ValueError as exc:
            error = exc
        with database_refusing(), pytest.raises(Reject) as rejected:
            capture.record_failure(task, "run-1", error, None, (), {}, put_back=True)
        assert rejected.value.requeue is True
        assert isinstance(rejected.value.reason, DatabaseUnavailable)
        # Without put_back (the worker's main process): logged, nothing raised.
        with database_refusing():
            assert capture.record_failure(task, "run-1", error, None, (), {}) is None
        # Once the database answers, the dead letter is written.
        assert capture.record_failure(task, "run-1", error, None, (), {}, put_back=True)
    assert DeadLetter.objects.get(task_id="run-1").exception_message == "failed for good"
