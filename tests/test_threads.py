"""The worker's repeating chore thread: a failing round is logged and the next one still runs."""

import threading

from structlog.testing import capture_logs

from project.threads import Repeating


def test_a_failed_round_is_logged_and_the_chore_runs_again_until_stopped():
    calls, second = [], threading.Event()

    def chore():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database away")
        second.set()

    loop = Repeating(chore, 0.01, failure_event="test.chore_failed")
    with capture_logs() as logs:
        loop.start("test-chore")
        assert second.wait(5)
        loop.stopped.set()
    assert logs[0]["event"] == "test.chore_failed"
    assert "database away" in logs[0]["error"]
    assert len(calls) >= 2
