"""Monitoring in-process: job status derivation at a fixed ``now``, the outcome check, beat
state, alerts (flips only, channels that fail), the endpoints and the liveness command."""

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client, override_settings
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from deadletters.models import DeadLetter
from monitoring.alerts import evaluate_alerts, send, step
from monitoring.models import AlertState, JobMonitor
from monitoring.status import beat_state, job_status
from scheduling.beat import BeatHeartbeat, BeatLease, Dispatch, ScheduleVersion
from scheduling.billing.models import Coupon

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC)


def job(name="every-minute", task="scheduling.expire_coupons", anchor=T0, **schedule):
    if not schedule:
        schedule["crontab"] = CrontabSchedule.objects.create(minute="*", timezone="UTC")
    model = PeriodicTask.objects.create(name=name, task=task, **schedule)
    PeriodicTask.objects.filter(pk=model.pk).update(date_changed=anchor)
    return PeriodicTask.objects.get(pk=model.pk)


def run(model, slot, state="succeeded", started=None, finished=None, kind="scheduled", **extra):
    started = started if started is not None else slot + dt.timedelta(seconds=1)
    if finished is None and state in ("succeeded", "failed"):
        finished = started + dt.timedelta(seconds=2)
    return Dispatch.objects.create(
        periodic_task=model, slot=slot, kind=kind, state=state, task_id=f"{model.pk}-{slot}",
        task_name=model.task, dispatched_at=slot,
        started_at=started if state != "sent" else None, finished_at=finished, **extra)


def minutes(n):
    return dt.timedelta(minutes=n)


def status_at(model, now, **kw):
    return job_status(PeriodicTask.objects.select_related("crontab", "interval").get(
        pk=model.pk), now, **kw)


def test_ok_late_queued_running_slow_failing_paused_never_run(only, live_worker):
    model = job()
    first = status_at(model, T0 + dt.timedelta(seconds=30))
    assert first.status == "never_run", first.reason
    assert status_at(model, T0 + minutes(4)).status == "late"  # 12:01 + 120 s grace passed
    run(model, T0 + minutes(1))
    run(model, T0 + minutes(2))
    result = status_at(model, T0 + minutes(2) + dt.timedelta(seconds=30))
    assert (result.status, result.last_duration_ms) == ("ok", 2000.0)
    assert result.last_success == T0 + minutes(2) + dt.timedelta(seconds=3)
    run(model, T0 + minutes(3), state="sent")
    assert status_at(model, T0 + minutes(4)).status == "ok"  # sent 1 min ago: within grace
    late_start = status_at(model, T0 + minutes(3) + dt.timedelta(seconds=121))
    # 12:04 is also due by then but within its grace; the 12:03 run waits for a worker.
    assert late_start.status == "queued" and "not started" in late_start.reason
    third = Dispatch.objects.get(slot=T0 + minutes(3))  # started on a worker (results backend)
    TaskResult.objects.create(task_id=third.task_id, status="STARTED", date_started=T0 + minutes(3))
    assert status_at(model, T0 + minutes(4)).status == "running"
    JobMonitor.objects.create(periodic_task=model, max_runtime=30)
    assert status_at(model, T0 + minutes(4)).status == "slow"
    Dispatch.objects.filter(slot=T0 + minutes(3)).update(state="failed",
                                                         finished_at=T0 + minutes(4))
    failing = status_at(model, T0 + minutes(4))
    assert failing.status == "failing" and failing.consecutive_failures == 1
    PeriodicTask.objects.filter(pk=model.pk).update(enabled=False)
    assert status_at(model, T0 + minutes(60)).status == "paused"


def test_missed_and_skipped_slots_count_as_handled_by_the_scheduler(only, live_worker):
    model = job()
    run(model, T0 + minutes(1))
    Dispatch.objects.create(periodic_task=model, slot=T0 + minutes(9), kind="missed",
                            state="not_sent", task_name=model.task, missed_from=T0 + minutes(2),
                            missed_count=8)
    run(model, T0 + minutes(10))
    assert status_at(model, T0 + minutes(10) + dt.timedelta(seconds=30)).status == "ok"


def test_interval_job_status_follows_its_slots(only, live_worker):
    every, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    model = job("every-10-min", interval=every)
    assert status_at(model, T0 + minutes(11)).status == "never_run"
    assert status_at(model, T0 + minutes(13)).status == "late"
    run(model, T0 + minutes(10))
    assert status_at(model, T0 + minutes(21)).status == "ok"
    assert status_at(model, T0 + minutes(23)).status == "late"


def test_crontab_in_berlin_across_the_spring_forward_day(only, live_worker):
    # Daily at 02:30 Europe/Berlin; 29 March 2026 has no 02:30: the run is due at 03:30 CEST.
    cron = CrontabSchedule.objects.create(minute="30", hour="2", timezone="Europe/Berlin")
    model = job("nightly", crontab=cron, anchor=dt.datetime(2026, 3, 28, 2, 0, tzinfo=dt.UTC))
    run(model, dt.datetime(2026, 3, 28, 1, 30, tzinfo=dt.UTC))  # 02:30 CET on the 28th
    before = status_at(model, dt.datetime(2026, 3, 29, 1, 31, tzinfo=dt.UTC))  # 03:31 CEST
    assert before.status == "ok"
    assert before.next_run == dt.datetime(2026, 3, 30, 0, 30, tzinfo=dt.UTC)
    after = status_at(model, dt.datetime(2026, 3, 29, 1, 33, tzinfo=dt.UTC))  # grace passed
    assert after.status == "late" and "01:30:00 UTC" in after.reason


def test_outcome_check_catches_a_job_that_succeeds_without_doing_its_work(only, live_worker):
    model = job()
    now = T0 + minutes(10)
    Coupon.objects.create(code="OLD", expires_at=T0)  # due long ago, still active
    run(model, now - minutes(1), result={"expired": 0, "now": (now - minutes(1)).isoformat()})
    result = status_at(model, now)
    assert result.status == "failing"
    assert result.reason.startswith("1 active coupons past their expiry")
    Coupon.objects.update(status="expired", expired_at=now)
    assert status_at(model, now).status == "ok"


def beat_row(instance, tick, leader=True, version=None):
    return BeatHeartbeat.objects.create(
        instance=instance, hostname="h", pid=1, started_at=tick, last_tick_at=tick,
        is_leader=leader, schedule_version=version if version is not None else
        ScheduleVersion.current())


def test_beat_state_needs_a_fresh_leader_with_a_lease_on_the_current_schedule(only):
    now = T0
    assert "no beat is leading" in beat_state(now).problems[0]
    beat_row("a", now - dt.timedelta(seconds=1))
    BeatLease.objects.create(name="default", holder="a", expires_at=now + minutes(1))
    assert beat_state(now).ok
    assert not beat_state(now + dt.timedelta(seconds=5)).ok  # stale heartbeat
    BeatHeartbeat.objects.filter(instance="a").update(schedule_version=-1)
    ScheduleVersion.objects.filter(pk=1).update(changed_at=now - minutes(1))
    assert "loaded schedule version -1" in beat_state(now).problems[0]


class Hook(BaseHTTPRequestHandler):
    received: list = []
    status = 200

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(Hook.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    Hook.received, Hook.status = [], 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_a_hundred_bad_evaluations_give_one_alert_and_the_recovery_one_more(webhook, settings):
    settings.MONITORING_WEBHOOK_URL = webhook
    settings.ADMINS = [("", "ops@example.invalid")]
    flips = [step("job:x", True, "late: nothing dispatched", T0) for _ in range(100)]
    assert flips.count("down") == 1 and flips[1] == "down"  # after MONITORING_ALERT_AFTER = 2
    flaps = [step("job:x", bad, "flap", T0) for bad in (False, True, False, True)]
    assert flaps == [None] * 4  # one good evaluation is not a recovery
    recovery = [step("job:x", False, "", T0) for _ in range(10)]
    assert recovery.count("up") == 1
    assert [m["text"].splitlines()[0] for m in Hook.received] == [
        "*[billing] PROBLEM job:x*", "*[billing] RECOVERED job:x*"]
    assert [m.subject for m in mail.outbox] == [
        "[Django] [billing] PROBLEM job:x", "[Django] [billing] RECOVERED job:x"]


def test_a_broken_webhook_does_not_break_the_evaluation(webhook, settings, only):
    Hook.status = 500
    settings.MONITORING_WEBHOOK_URL = webhook
    for _ in range(3):
        evaluate_alerts(T0)  # beat is down: the alert is due, the webhook answers 500
    assert AlertState.objects.get(subject="beat").notified == "bad"
    assert [m["text"].splitlines()[0] for m in Hook.received] == ["*[billing] PROBLEM beat*"]
    settings.MONITORING_WEBHOOK_URL = "http://127.0.0.1:1/closed"
    AlertState.objects.all().delete()  # the alert is due again, to a closed port
    evaluate_alerts(T0)  # a closed port: logged, never raised
    evaluate_alerts(T0)
    assert AlertState.objects.get(subject="beat").notified == "bad"  # decided and recorded


def test_dead_letters_notify_once_per_task_name(webhook, settings, only):
    settings.MONITORING_WEBHOOK_URL = webhook
    for i in range(30):
        DeadLetter.objects.create(task_id=f"a{i}", task_name="billing.charge",
                                  exception_type="E")
    DeadLetter.objects.create(task_id="b", task_name="billing.refund", exception_type="E")
    evaluate_alerts(T0)
    evaluate_alerts(T0)
    titles = [m["text"].splitlines()[0] for m in Hook.received if "dead letter" in m["text"]]
    assert titles == ["*[billing] 30 new dead letter(s): billing.charge*",
                      "*[billing] 1 new dead letter(s): billing.refund*"]


@override_settings(MONITORING_HEALTH_CACHE=0, HEALTH_TOKEN="s3cret-token")
def test_endpoints_public_status_only_detail_with_token_or_staff(admin_client, only):
    client = Client()
    assert client.get("/health/live").content == b"ok"
    public = client.get("/health/scheduler")
    assert public.status_code == 503 and public.json() == {"status": "fail"}
    detailed = client.get("/health/scheduler", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert detailed.status_code == 503 and "no beat is leading" in detailed.json()["problems"][0]
    assert client.get("/health/scheduler", HTTP_AUTHORIZATION="Bearer wrong").json() == {
        "status": "fail"}
    assert "problems" in admin_client.get("/health/scheduler").json()
    ready = client.get("/health/ready", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ok", "database": "ok", "broker": "ok"}
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert metrics.status_code == 200 and b"billing_beat_leader 0.0" in metrics.content
    assert b"billing_jobs_unscheduled 0.0" in metrics.content  # no jobs: nothing unscheduled
    job("every-minute")
    metrics = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert b"billing_jobs_unscheduled 1.0" in metrics.content  # one job, no beat
    from django.conf import settings

    for response in (detailed, ready, metrics, admin_client.get("/health/scheduler")):
        body = response.content.decode()
        for secret in ("s3cret-token", settings.SECRET_KEY, "postgres://", "Traceback",
                       settings.DATABASES["default"]["NAME"]):
            assert secret not in body


@override_settings(MONITORING_HEALTH_CACHE=0)
def test_health_turns_green_with_a_leading_beat(client, only):
    from django.utils import timezone

    now = timezone.now()
    beat_row("a", now)
    BeatLease.objects.create(name="default", holder="a", expires_at=now + minutes(1))
    assert client.get("/health/scheduler").status_code == 200


def test_dashboard_is_for_staff_and_lists_every_job(admin_client, only):
    model = job()
    run(model, T0 + minutes(1), state="failed")
    assert Client().get("/monitoring/").status_code == 302  # to the admin login
    page = admin_client.get("/monitoring/")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-job="every-minute"' in text and "cell failed" in text
    assert "Background jobs dashboard" in admin_client.get("/admin/").content.decode()


def run_command(*args):
    try:
        call_command("check_scheduler_liveness", *args)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_liveness_command_exit_codes(only, capsys):
    from django.utils import timezone

    assert run_command() == 1
    assert "no beat is leading" in capsys.readouterr().out
    now = timezone.now()
    beat_row("a", now)
    BeatLease.objects.create(name="default", holder="a", expires_at=now + minutes(1))
    assert run_command("--max-age", "30") == 0
    assert run_command("--json", "--max-age", "30") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["status"] == "ok"
    assert run_command("--max-age", "-1") == 2


@pytest.fixture
def hook_url(webhook):
    """The local HTTP server as an Apprise json:// URL, with a password standing for a secret."""
    return webhook.replace("http://", "json://alerts:s3cret-token@")


def test_alerts_reach_every_apprise_url_with_the_flip_rules(hook_url, settings):
    settings.MONITORING_NOTIFY_URLS = [hook_url]
    flips = [step("job:x", True, "late: nothing dispatched", T0) for _ in range(5)]
    assert flips.count("down") == 1
    recovery = [step("job:x", False, "", T0) for _ in range(5)]
    assert recovery.count("up") == 1
    assert [(m["title"], m["message"]) for m in Hook.received] == [
        ("[billing] PROBLEM job:x", "late: nothing dispatched"),
        ("[billing] RECOVERED job:x", "job:x is ok again."),
    ]


def test_a_failing_apprise_url_is_logged_by_its_scheme_never_its_secret(
    hook_url, settings, caplog, capfd
):
    Hook.status = 500
    settings.MONITORING_NOTIFY_URLS = [hook_url, "nosuchservice://key@host"]
    outcome = send("[billing] PROBLEM beat", "no beat is leading")
    assert outcome["apprise:json"] == "failed"
    assert outcome["apprise:nosuchservice"] == "failed: not an Apprise URL"
    assert len(Hook.received) == 1  # it was tried
    printed = caplog.text + "".join(capfd.readouterr())
    assert "alert.apprise_failed" in printed and "s3cret-token" not in printed
    assert "key@host" not in printed


def test_a_bad_apprise_url_fails_the_system_check(settings):
    from monitoring.checks import check_notify_urls

    settings.MONITORING_NOTIFY_URLS = ["json://127.0.0.1/ok", "nosuchservice://key@host"]
    (error,) = check_notify_urls()
    assert error.id == "monitoring.E001"
    assert "entry 2 (scheme 'nosuchservice')" in error.msg and "key@host" not in error.msg
    settings.MONITORING_NOTIFY_URLS = []
    assert check_notify_urls() == []


# --- the admin banner ----------------------------------------------------------------------------
BANNER = "No scheduler is running: these schedules are not being honoured."


def alive_beat():
    now = timezone.now()
    beat_row("alive", now)
    BeatLease.objects.update_or_create(name="default", defaults={
        "holder": "alive", "expires_at": now + minutes(1)})


def test_the_admin_shows_a_banner_where_schedules_are_edited_when_no_beat_runs(
    admin_client, settings
):
    settings.MONITORING_HEALTH_CACHE = 0
    for url in ("/admin/", "/admin/django_celery_beat/periodictask/",
                f"/admin/django_celery_beat/periodictask/{PeriodicTask.objects.first().pk}/change/"):
        page = admin_client.get(url)
        assert page.status_code == 200, url
        assert BANNER in page.content.decode(), url
    assert BANNER not in admin_client.get("/admin/scheduling/coupon/").content.decode()
    alive_beat()
    assert BANNER not in admin_client.get("/admin/").content.decode()


def test_the_banner_names_red_jobs_escaped(admin_client, settings, only):
    settings.MONITORING_HEALTH_CACHE = 0
    alive_beat()
    job('<script>alert("x")</script>', anchor=timezone.now() - minutes(30))  # never dispatched
    text = admin_client.get("/admin/").content.decode()
    assert "1 job(s) are not doing their work: &lt;script&gt;alert(&quot;x&quot;)" in text
    assert '<script>alert("x")' not in text


def test_the_banner_never_breaks_the_admin(admin_client, settings, monkeypatch):
    from monitoring import status

    settings.MONITORING_HEALTH_CACHE = 0

    def unreachable(now, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(status, "beat_state", unreachable)
    page = admin_client.get("/admin/")
    assert page.status_code == 200 and BANNER not in page.content.decode()
