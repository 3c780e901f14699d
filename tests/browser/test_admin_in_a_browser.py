"""The people-facing screens in a real browser (Playwright driving Debian's chromium), against a
live server on the test database, with a real beat and worker where the screen depends on them.
Screenshots of every page are kept in test-artifacts/browser/.

Skipped, with the reason, when Playwright or chromium is missing (`.ci/run` installs both)."""

import os
import shutil
import socket
import time
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from deadletters.models import DeadLetter
from monitoring.models import JobMonitor
from tests.support.processes import (
    ROOT,
    Service,
    beat,
    eventually,
    free_port,
    wait_for_ping,
    worker,
)
from tests.support.steps import InProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"))
                 if p), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (uv sync installs it)")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (`.ci/run` installs Debian's chromium)")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still synchronous, which Django only allows with this documented switch.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox"])
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server, settings):
    # The live server speaks plain HTTP: cookies must not be Secure-only here.
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    # The live server serves static files from the apps' folders (not the collected, hashed
    # ones, which the gunicorn test below covers): link them by their plain names.
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    settings.MONITORING_HEALTH_CACHE = 0
    get_user_model().objects.create_superuser("ops", "ops@example.invalid", "a-long-password-1")
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto("/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "a-long-password-1")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    yield page
    context.close()


def submit(page, selector):
    """Click a submit button and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)
    page.wait_for_load_state()


def shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def processes(tmp_path):
    env = InProcess(tmp_path).env
    started = []

    def start(kind):
        if kind == "worker":
            hostname = f"browser-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
            service = worker(env, tmp_path, hostname).start()
            started.append(service)
            wait_for_ping(env, hostname)
        else:
            service = beat(env, tmp_path).start()
            started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def test_login_edit_a_schedule_see_next_runs_and_beat_apply_it(page, processes):
    call_command("seed_schedules", verbosity=0)  # transactional tests start from empty tables
    processes("beat")
    job = PeriodicTask.objects.get(name="flag-expiring-cards")
    shot(page, "01-admin-index")
    assert page.locator("#monitoring-link").is_visible()

    page.goto(f"/admin/django_celery_beat/periodictask/{job.pk}/change/")
    runs = page.locator("ol.next-runs li")
    assert runs.count() == 5
    assert "UTC" in runs.first.inner_text()
    shot(page, "02-schedule-change-form")

    page.locator("text=Arguments").first.click()  # the collapsed fieldset
    page.fill("#id_kwargs", '{"within_days": 45}')
    submit(page, "input[name=_save]")
    assert "was changed successfully" in page.content()
    shot(page, "03-schedule-saved")

    def versions():
        page.goto("/monitoring/")
        return page.locator("text=Schedule version").locator("..").inner_text()

    text = eventually(versions, lambda t: _loaded_is_current(t), 20,
                      "beat to load the edited schedule")
    shot(page, "04-monitoring-beat-applied")
    assert "loaded" in text


def _loaded_is_current(text: str) -> bool:
    # "Schedule version: 12 loaded / 12 current"
    numbers = [int(part) for part in text.replace("/", " ").split() if part.isdigit()]
    return len(numbers) == 2 and numbers[0] == numbers[1]


def test_requeue_a_dead_letter_and_see_it_resolved_then_ignore_one_with_a_reason(page,
                                                                                   processes):
    processes("worker")
    fixable = DeadLetter.objects.create(task_id=str(uuid.uuid4()),
                                        task_name="scheduling.expire_coupons",
                                        exception_type="OperationalError",
                                        exception_message="database went away", queue="celery")
    noise = DeadLetter.objects.create(task_id=str(uuid.uuid4()),
                                      task_name="scheduling.flag_expiring_cards",
                                      exception_type="ValueError", exception_message="duplicate")
    page.goto("/admin/deadletters/deadletter/?status__exact=pending")
    shot(page, "05-dead-letters-pending")
    page.check(f"input[name=_selected_action][value='{fixable.pk}']")
    page.select_option("select[name=action]", "requeue")
    submit(page, "button[name=index]")
    assert "1 dead letter requeued." in page.content()
    eventually(lambda: DeadLetter.objects.get(pk=fixable.pk).status, lambda s: s == "resolved",
               30, "the requeued run to succeed")
    page.goto(f"/admin/deadletters/deadletter/{fixable.pk}/change/")
    assert "resolved" in page.content()
    shot(page, "06-dead-letter-resolved")

    page.goto("/admin/deadletters/deadletter/?status__exact=pending")
    page.check(f"input[name=_selected_action][value='{noise.pk}']")
    page.select_option("select[name=action]", "ignore")
    submit(page, "button[name=index]")
    page.fill("textarea[name=reason]", "duplicate of a charge already refunded")
    shot(page, "07-ignore-asks-why")
    submit(page, "input[type=submit][value=Ignore]")
    assert "1 dead letter ignored." in page.content()
    noise.refresh_from_db()
    assert (noise.status, noise.resolution_note) == ("ignored",
                                                     "duplicate of a charge already refunded")
    shot(page, "08-ignored")


def test_dashboard_shows_a_job_turn_from_ok_to_late_when_beat_stops(page, processes):
    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    job = PeriodicTask.objects.create(name="expire-coupons", task="scheduling.expire_coupons",
                                      interval=every)
    JobMonitor.objects.create(periodic_task=job, grace=2)
    processes("worker")
    the_beat = processes("beat")

    def status():
        page.goto("/monitoring/")
        return page.locator("tr[data-job='expire-coupons']").get_attribute("data-status")

    eventually(status, lambda s: s == "ok", 40, "expire-coupons to be ok")
    shot(page, "09-dashboard-ok")
    the_beat.stop()
    stopped = time.monotonic()
    eventually(status, lambda s: s == "late", 20, "expire-coupons to turn late")
    assert time.monotonic() - stopped < 20
    assert "not dispatched" in page.locator("tr[data-job='expire-coupons']").inner_text()
    shot(page, "10-dashboard-late")


def test_the_admin_warns_when_no_scheduler_runs_and_the_warning_clears_with_beat(page,
                                                                              processes):
    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.create(name="expire-coupons", task="scheduling.expire_coupons",
                                interval=every)
    processes("worker")  # workers deployed, no beat: the scenario the product exists for

    def banner(url):
        page.goto(url)
        found = page.locator("#scheduler-banner")
        return found.inner_text() if found.count() else ""

    assert "No scheduler is running" in banner("/admin/")
    shot(page, "11-admin-banner-no-beat")
    assert "No scheduler is running" in banner("/admin/django_celery_beat/periodictask/")
    assert page.locator("#scheduler-banner a").get_attribute("href") == "/monitoring/"
    processes("beat")
    eventually(lambda: banner("/admin/"), lambda text: text == "", 40, "the banner to clear")
    shot(page, "12-admin-banner-cleared")


def test_the_admin_is_styled_under_gunicorn_with_production_settings(browser, tmp_path):
    """The compose file's web command (gunicorn, DEBUG off) serves the admin's CSS and JS itself
    (WhiteNoise): every static request answers 200 and the page wears the admin's colours."""
    import urllib.request

    port = free_port()
    env = InProcess(tmp_path).env | {"DJANGO_DEBUG": "0", "DJANGO_SECURE_SSL_REDIRECT": "0",
                                     "DJANGO_ALLOWED_HOSTS": "127.0.0.1"}
    web = Service("gunicorn", ["gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}"],
                  env | {"PATH": f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"}, tmp_path).start()
    try:
        def live():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2):
                    return True
            except OSError:
                return False

        eventually(live, bool, 60, "gunicorn to answer", [web])
        context = browser.new_context(base_url=f"http://127.0.0.1:{port}")
        page = context.new_page()
        statics = []
        page.on("response", lambda r: statics.append((r.url, r.status))
                if "/static/" in r.url else None)
        page.goto("/admin/login/")
        page.wait_for_load_state("networkidle")
        shot(page, "admin-login-under-gunicorn")
        assert statics and all(status == 200 for _, status in statics), statics
        header = page.eval_on_selector("#header", "e => getComputedStyle(e).backgroundColor")
        assert header not in ("rgba(0, 0, 0, 0)", "transparent"), header  # base.css applied
        context.close()
    finally:
        web.stop()


def test_the_page_of_a_job_shows_its_status_runs_chart_changes_and_dead_letters(page,
                                                                               processes):
    import datetime as dt

    from django.utils import timezone

    from scheduling.beat import Dispatch, services

    PeriodicTask.objects.all().delete()
    every, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    job = PeriodicTask.objects.create(name="expire-coupons", task="scheduling.expire_coupons",
                                      interval=every)
    JobMonitor.objects.create(periodic_task=job, grace=2)
    ops = get_user_model().objects.get(username="ops")
    jobs = PeriodicTask.objects.filter(pk=job.pk)
    services.pause(jobs, by=ops, reason="incident <b>42</b>")
    services.resume(jobs, by=ops, reason="fixed")
    processes("worker")
    the_beat = processes("beat")
    done = Dispatch.objects.filter(periodic_task=job, state="succeeded")
    eventually(done.count, lambda n: n >= 4, 40, "four real runs of expire-coupons",
               [the_beat])
    the_beat.stop()  # no beat: the job turns late, its page says why
    # Rows of the kinds the chart marks, between the real runs (what beat and the ledger write
    # on a missed slot, a skipped one, a lost run and a failed one).
    slots = sorted(done.values_list("slot", flat=True))
    half = dt.timedelta(milliseconds=500)
    for slot, kind, state, error in [
        (slots[0] + half, "missed", "not_sent", ""),
        (slots[1] + half, "skipped", "not_sent", ""),
        (slots[2] + half, "scheduled", "lost", "the worker w@host that ran it is gone (stopped)"),
        (slots[3] + half, "scheduled", "failed", "ValueError: <script>alert(1)</script>"),
    ]:
        Dispatch.objects.create(periodic_task=job, slot=slot, kind=kind, state=state,
                                task_id=f"marked-{kind}-{state}", task_name=job.task,
                                dispatched_at=slot, error=error, started_at=slot,
                                finished_at=slot + dt.timedelta(seconds=1))
    DeadLetter.objects.create(task_id="dead-1", task_name=job.task, exception_type="ValueError",
                              exception_message="within_days must be positive",
                              periodic_task_name="expire-coupons", failed_at=timezone.now())

    # From the periodic task admin list, its monitoring link.
    page.goto("/admin/django_celery_beat/periodictask/")
    with page.expect_navigation():
        page.click("text=status, runs and chart")
    assert page.locator("#job-name").inner_text() == "expire-coupons"
    eventually(lambda: (page.reload(), page.locator("#job-status").inner_text())[1],
               lambda s: s == "late", 20, "the page to say late")
    assert "was not dispatched" in page.locator("#job-reason").inner_text()
    chart = page.locator("svg#run-chart")
    rows = Dispatch.objects.filter(periodic_task=job).count()
    assert chart.locator("rect").count() == rows
    ledger = Dispatch.objects.filter(periodic_task=job)
    for css, rows_of in [("missed", ledger.filter(kind="missed")),
                         ("skipped", ledger.filter(kind="skipped")),
                         ("lost", ledger.filter(state="lost")),
                         ("failed", ledger.filter(state="failed")),
                         ("succeeded", ledger.filter(state="succeeded"))]:
        assert chart.locator(f"rect.{css}").count() == rows_of.count() >= 1, css
    tall = chart.locator("rect.lost").get_attribute("height")
    assert float(tall) == float(chart.get_attribute("height"))  # marked slots: full height
    assert len(page.locator("#next-runs").inner_text().splitlines()) == 5
    changes = page.locator("#changes").inner_text()
    assert "paused" in changes and "incident <b>42</b>" in changes  # shown as text, escaped
    assert "resumed" in changes
    assert "ValueError" in page.locator("#dead-letters").inner_text()
    assert "<script>alert(1)</script>" in page.locator("#runs").inner_text()
    assert page.locator("#runs script").count() == 0
    shot(page, "13-job-page")
