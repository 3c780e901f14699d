"""The result backend writes each state in one upsert: the rows it leaves are the ones
django-celery-results' own backend leaves, state after state."""

from types import SimpleNamespace

import pytest
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from project.celery import app
from project.results import ResultBackend

pytestmark = pytest.mark.django_db(transaction=True)
COMPARED = ("status", "result", "traceback", "meta", "content_type", "content_encoding",
            "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker")


def request(task_id):
    return SimpleNamespace(id=task_id, task="scheduling.expire_coupons", args=[1, "a"],
                           kwargs={"within_days": 3}, argsrepr="[1, 'a']",
                           kwargsrepr="{'within_days': 3}", hostname="w1@test",
                           periodic_task_name="expire-coupons", children=[], meta={},
                           ignore_result=False, group=None, chord=None)


def test_each_state_leaves_the_row_django_celery_results_would():
    ours, theirs = ResultBackend(app=app), DatabaseBackend(app=app)
    steps = [("STARTED", {"pid": 1, "hostname": "w1@test"}, None),
             ("RETRY", ValueError("again"), "Traceback: again"),
             ("SUCCESS", {"expired": 3}, None)]
    for state, result, traceback in steps:
        ours.store_result("ours", result, state, traceback, request=request("ours"))
        theirs.store_result("theirs", result, state, traceback, request=request("theirs"))
        mine, library = (TaskResult.objects.get(task_id=t) for t in ("ours", "theirs"))
        for field in COMPARED:
            assert getattr(mine, field) == getattr(library, field), (state, field)
        assert (mine.date_started is None) == (library.date_started is None), state
        assert mine.date_done is not None and mine.date_created <= mine.date_done
    assert TaskResult.objects.filter(task_id="ours").count() == 1
    assert ours.get_task_meta("ours")["result"] == {"expired": 3}
