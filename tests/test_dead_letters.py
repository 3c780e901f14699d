"""Dead letters in the admin and their services: permissions (view-only staff, forged POSTs,
CSRF), requeue and ignore with counts and history, compare-and-set, refusals; redaction;
retention; the numbers monitoring reads."""

import base64
import datetime as dt
import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from deadletters import services
from deadletters.capture import redact
from deadletters.models import DeadLetter, Delivery
from deadletters.tasks import prune_dead_letters
from tests.support.broker import sent_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker")]
CHANGELIST = "/admin/deadletters/deadletter/"


def letter(task_id="t-1", task="scheduling.flag_expiring_cards", **fields):
    fields.setdefault("kwargs", {"within_days": 30})
    return DeadLetter.objects.create(task_id=task_id, task_name=task,
                                     exception_type="RuntimeError", **fields)


def staff(client, username, *codenames):
    user = get_user_model().objects.create_user(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(
        content_type__app_label="deadletters", codename__in=codenames))
    client.force_login(user)
    return client


def act(client, action, *rows, follow=False, **extra):
    return client.post(CHANGELIST, {"action": action, "index": 0,
                                    "_selected_action": [r.pk for r in rows], **extra},
                       follow=follow)


def test_view_only_staff_see_no_actions_and_a_forged_post_changes_nothing(client, broker):
    row = letter()
    viewer = staff(client, "viewer", "view_deadletter")
    page = viewer.get(CHANGELIST)
    assert page.status_code == 200 and page.context["action_form"] is None
    assert viewer.get(f"{CHANGELIST}{row.pk}/change/").status_code == 200
    for action in ("requeue", "ignore"):
        act(viewer, action, row, confirm="yes", reason="forged")
    row.refresh_from_db()
    assert row.status == "pending" and not sent_messages(broker)


def test_each_action_needs_its_own_permission(client):
    row = letter()
    requeuer = staff(client, "requeuer", "view_deadletter", "requeue_deadletter")
    actions = [value for value, _ in requeuer.get(CHANGELIST).context["action_form"]
               .fields["action"].choices]
    assert "requeue" in actions and "ignore" not in actions
    act(requeuer, "ignore", row, confirm="yes", reason="not allowed")
    row.refresh_from_db()
    assert row.status == "pending"


def test_a_post_without_csrf_token_is_refused(db):
    row = letter()
    user = get_user_model().objects.create_superuser("root", "r@example.invalid", "pw")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    response = act(browser, "requeue", row)
    assert response.status_code == 403
    row.refresh_from_db()
    assert row.status == "pending"


def test_requeue_sends_once_after_commit_and_records_history(
    admin_client, superuser, broker, django_capture_on_commit_callbacks
):
    row = letter(queue="celery", periodic_task_name="flag-expiring-cards")
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "requeue", row)
        act(admin_client, "requeue", row)  # a double submit
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.status, row.resolved_by) == ("requeued", superuser)
    (message,) = sent_messages(broker)
    assert message["headers"]["id"] == row.requeued_task_id
    assert message["headers"]["task"] == "scheduling.flag_expiring_cards"
    assert message["headers"]["requeued_from"] == str(row.pk)
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([], {"within_days": 30})
    assert message["properties"]["delivery_info"]["routing_key"] == "celery"
    assert LogEntry.objects.get(object_id=str(row.pk)).get_change_message().startswith(
        "requeued as")


def test_requeue_refuses_unknown_tasks_and_unreplayable_rows_and_keeps_them_pending(
    admin_client, broker, django_capture_on_commit_callbacks
):
    gone = letter("t-gone", task="scheduling.renamed_long_ago")
    redacted = letter("t-red", replayable=False,
                      not_replayable_reason="sensitive values were redacted")
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "requeue", gone, redacted, follow=True)
    text = response.content.decode()
    assert "no worker knows the task &#x27;scheduling.renamed_long_ago&#x27;" in text
    assert "not replayable: sensitive values were redacted" in text
    assert set(DeadLetter.objects.values_list("status", flat=True)) == {"pending"}
    assert not sent_messages(broker)


def test_two_admins_requeue_at_once_only_one_sends(superuser, broker,
                                                   django_capture_on_commit_callbacks):
    row = letter()
    first, second = DeadLetter.objects.get(pk=row.pk), DeadLetter.objects.get(pk=row.pk)
    with django_capture_on_commit_callbacks(execute=True):
        a = services.requeue([first], by=superuser)
        b = services.requeue([second], by=superuser)
    assert (len(a.requeued), len(b.requeued), len(b.already)) == (1, 0, 1)
    assert len(sent_messages(broker)) == 1


def test_ignore_asks_for_a_reason_then_records_it(client):
    rows = [letter(f"t-{i}") for i in range(3)]
    ops = staff(client, "ops", "view_deadletter", "ignore_deadletter")
    page = act(ops, "ignore", *rows)
    assert page.status_code == 200 and b"Say why" in page.content
    missing = act(ops, "ignore", *rows, confirm="yes", reason="")
    assert b"This field is required" in missing.content
    done = act(ops, "ignore", *rows[:2], confirm="yes", reason="duplicate of INC-42", follow=True)
    assert b"2 dead letters ignored." in done.content
    ignored = DeadLetter.objects.filter(status="ignored")
    assert ignored.count() == 2
    assert set(ignored.values_list("resolution_note", "resolved_by__username")) == {
        ("duplicate of INC-42", "ops")}
    assert LogEntry.objects.filter(change_message__contains="duplicate of INC-42").count() == 2


def test_ignore_all_matching_the_filter(admin_client):
    for i in range(5):
        letter(f"a-{i}", task="scheduling.expire_coupons")
    letter("other", task="scheduling.flag_expiring_cards")
    response = admin_client.post(
        f"{CHANGELIST}?task_name=scheduling.expire_coupons",
        {"action": "ignore", "index": 0, "select_across": "1",
         "_selected_action": [DeadLetter.objects.filter(task_name="scheduling.expire_coupons")
                              .first().pk],
         "confirm": "yes", "reason": "bulk cleanup"},
        follow=True,
    )
    assert b"5 dead letters ignored." in response.content
    assert DeadLetter.objects.get(task_id="other").status == "pending"


def test_changelist_filters_and_search(admin_client):
    letter("abc-123", exception_message="card processor timeout")
    letter("def-456", task="scheduling.expire_coupons", exception_message="other")
    DeadLetter.objects.filter(task_id="def-456").update(exception_type="ValueError")
    for query, shown, hidden in [
        ("?q=abc-123", "abc-123", "def-456"),
        ("?q=processor", "abc-123", "def-456"),
        ("?status__exact=pending&task_name=scheduling.expire_coupons", "def-456", "abc-123"),
        ("?exception_type=RuntimeError", "abc-123", "def-456"),
        ("?exception_type=ValueError", "def-456", "abc-123"),
    ]:
        text = admin_client.get(CHANGELIST + query).content.decode()
        assert shown in text and hidden not in text, query


def test_detail_page_shows_traceback_and_arguments(admin_client):
    row = letter(traceback='Traceback (most recent call last):\n  File "x.py"\nRuntimeError: boom',
                 kwargs={"within_days": 45})
    text = admin_client.get(f"{CHANGELIST}{row.pk}/change/").content.decode()
    assert "RuntimeError: boom" in text and "&quot;within_days&quot;: 45" in text


@pytest.mark.parametrize(
    ("value", "expected", "hit"),
    [
        ({"password": "x", "user": "ada"}, {"password": "[redacted]", "user": "ada"}, True),
        ({"cardNumber": "4242", "CVV": "123"}, {"cardNumber": "[redacted]", "CVV": "[redacted]"},
         True),
        ([{"nested": {"api_token": "t"}}], [{"nested": {"api_token": "[redacted]"}}], True),
        ({"within_days": 30}, {"within_days": 30}, False),
    ],
)
def test_redaction(value, expected, hit):
    assert redact(value) == (expected, hit)


def test_prune_keeps_pending_and_recent_decisions():
    now = timezone.now()
    old = now - dt.timedelta(days=40)
    letter("old-pending", failed_at=old)
    letter("old-ignored", status="ignored", resolved_at=old)
    letter("old-resolved", status="resolved", resolved_at=old)
    letter("old-requeued", status="requeued", resolved_at=old)
    letter("new-ignored", status="ignored", resolved_at=now)
    Delivery.objects.create(key="x:0", count=1, first_at=old)
    result = prune_dead_letters()
    assert result["pruned"] == 2 and result["delivery_counters"] == 1
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == {
        "old-pending", "old-requeued", "new-ignored"}
    with pytest.raises(ValueError, match="older_than_days"):
        prune_dead_letters(older_than_days=0)


def test_pending_stats_for_monitoring():
    now = timezone.now()
    letter("a", failed_at=now - dt.timedelta(hours=2))
    letter("b", failed_at=now - dt.timedelta(minutes=5))
    letter("c", status="ignored", failed_at=now - dt.timedelta(days=3))
    assert DeadLetter.objects.pending_stats(now=now) == {
        "pending": 2, "oldest_pending_age": 7200.0}


def test_a_hostile_task_id_in_a_requeue_link_is_escaped(admin_client):
    """A child dead letter's task id comes from a message header: whoever can publish one with a
    chosen id and ``requeued_from`` header must not get markup into the staff's browser."""
    parent = letter("parent-1", status=DeadLetter.Status.REQUEUED)
    hostile = '<script>alert("x")</script>{0}'
    letter(hostile, requeued_from=parent)
    response = admin_client.get(f"{CHANGELIST}{parent.pk}/change/")
    assert response.status_code == 200
    text = response.content.decode()
    assert '<script>alert("x")</script>' not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;{0}</a>" in text
