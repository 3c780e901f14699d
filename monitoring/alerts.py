"""Alerts: notify on state *changes* only, after ``MONITORING_ALERT_AFTER`` bad evaluations in a
row (and ``MONITORING_RECOVER_AFTER`` good ones for the recovery), so flapping and retries make no
noise. Channels: the log (always), email to ``ADMINS``, a Slack-compatible webhook, and every
Apprise URL in ``MONITORING_NOTIFY_URLS`` (PagerDuty, Opsgenie, Teams, Discord, Telegram, ...).
New dead letters are notified aggregated per task name. A failing channel is logged (an Apprise
URL by its scheme only: the rest may hold a secret), never raised."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request

import structlog
from django.conf import settings
from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Count, Max

from monitoring.models import AlertState
from monitoring.status import ALERTING

log = structlog.get_logger(__name__)


def send(title: str, text: str) -> dict[str, str]:
    """Deliver one notification on every configured channel; returns each channel's outcome."""
    outcome = {"log": "sent"}
    log.warning("alert", title=title, text=text)
    if settings.ADMINS:
        try:
            mail_admins(title, text, fail_silently=False)
            outcome["email"] = "sent"
        except Exception as exc:
            outcome["email"] = f"failed: {exc!r}"
            log.error("alert.email_failed", error=repr(exc))
    if settings.MONITORING_WEBHOOK_URL:
        body = json.dumps({"text": f"*{title}*\n{text}"}).encode()
        request = urllib.request.Request(
            settings.MONITORING_WEBHOOK_URL, data=body,
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
            outcome["webhook"] = "sent"
        except Exception as exc:
            outcome["webhook"] = f"failed: {exc!r}"
            log.error("alert.webhook_failed", error=repr(exc))
    for url in settings.MONITORING_NOTIFY_URLS:
        outcome[f"apprise:{scheme(url)}"] = notify_apprise(url, title, text)
    return outcome


def scheme(url: str) -> str:
    """What may be said of an Apprise URL: its scheme (host, path and query can hold secrets)."""
    return url.partition("://")[0] or "?"


def notify_apprise(url: str, title: str, text: str) -> str:
    import apprise  # about 0.2 s to import: only where an Apprise URL is configured

    notifier = apprise.Apprise()
    if not notifier.add(url):
        log.error("alert.apprise_bad_url", scheme=scheme(url))
        return "failed: not an Apprise URL"
    # (Apprise's own log lines, which can echo the URL, are silenced in project/logging.py.)
    if not notifier.notify(title=title, body=text):
        log.error("alert.apprise_failed", scheme=scheme(url))
        return "failed"
    return "sent"


def step(subject: str, bad: bool, reason: str, now: dt.datetime) -> str | None:
    """Record one evaluation of ``subject``; notify if its notified state flips. Returns
    "down", "up" or None."""
    with transaction.atomic():
        state, _ = AlertState.objects.select_for_update().get_or_create(subject=subject)
        state.current = "bad" if bad else "ok"
        if bad:
            state.bad_streak, state.good_streak, state.reason = state.bad_streak + 1, 0, reason
        else:
            state.good_streak, state.bad_streak = state.good_streak + 1, 0
        flip = None
        if bad and state.notified == "ok" and state.bad_streak >= settings.MONITORING_ALERT_AFTER:
            state.notified, state.changed_at, flip = "bad", now, "down"
        elif (not bad and state.notified == "bad"
              and state.good_streak >= settings.MONITORING_RECOVER_AFTER):
            state.notified, state.changed_at, flip = "ok", now, "up"
        state.save()
    if flip == "down":
        send(f"[billing] PROBLEM {subject}", reason)
    elif flip == "up":
        send(f"[billing] RECOVERED {subject}", f"{subject} is ok again.")
    return flip


def notify_dead_letters() -> int:
    """One notification per task name for dead letters recorded since the last call."""
    from deadletters.models import DeadLetter

    with transaction.atomic():
        mark, _ = AlertState.objects.select_for_update().get_or_create(subject="deadletters")
        new = DeadLetter.objects.filter(pk__gt=mark.watermark)
        groups = list(new.values("task_name").annotate(n=Count("pk"), last=Max("pk"))
                      .order_by("task_name"))
        if groups:
            mark.watermark = max(g["last"] for g in groups)
            mark.save(update_fields=["watermark"])
    for group in groups:
        send(f"[billing] {group['n']} new dead letter(s): {group['task_name']}",
             f"{group['n']} task(s) named {group['task_name']} failed for good. Review them in "
             f"the admin: /admin/deadletters/deadletter/?task_name={group['task_name']}"
             "&status__exact=pending")
    return len(groups)


def evaluate_alerts(now: dt.datetime, *, liveness=None) -> dict:
    from monitoring.liveness import evaluate

    liveness = liveness if liveness is not None else evaluate(now)
    beat_problems = [p for p in liveness.problems if p.startswith("beat:")]
    flips = {"beat": step("beat", bool(beat_problems), "; ".join(beat_problems), now)}
    for job in liveness.jobs:
        bad = job["status"] in ALERTING
        flips[f"job:{job['name']}"] = step(
            f"job:{job['name']}", bad, f"{job['status']}: {job['reason']}", now)
    flips["deadletters"] = notify_dead_letters()
    return {subject: flip for subject, flip in flips.items() if flip}
