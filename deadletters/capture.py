"""Recording dead letters, from the worker.

``record_failure`` is called from ``BaseTask.on_failure`` (in the pool process, after the last
retry) and from the ``task_failure`` signal (also sent by the worker's main process when the pool
process was killed, hit the hard time limit, or the task rejected its message). Whichever comes
first writes the row; the unique ``task_id`` absorbs the other.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import structlog
from celery.exceptions import Reject
from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from project.database import DatabaseUnavailable, through_outage

log = structlog.get_logger(__name__)
TRACEBACK_LIMIT = 20_000  # characters kept: the end of the traceback, where the error is
MESSAGE_LIMIT = 2_000
REDACTED = "[redacted]"


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def redact(value, keys=None):
    """``(value with sensitive values replaced, whether anything was replaced)``.

    A key is sensitive when, lowercased with separators removed, it contains one of
    ``DEADLETTERS_REDACT_KEYS`` (so ``cardNumber``, ``card_number`` and ``new_password`` all are).
    """
    keys = keys if keys is not None else [_normalise(k) for k in settings.DEADLETTERS_REDACT_KEYS]
    if isinstance(value, dict):
        out, hit = {}, False
        for k, v in value.items():
            if any(key in _normalise(k) for key in keys):
                out[k], hit = REDACTED, True
            else:
                out[k], sub = redact(v, keys)
                hit = hit or sub
        return out, hit
    if isinstance(value, list | tuple):
        items = [redact(v, keys) for v in value]
        return [v for v, _ in items], any(h for _, h in items)
    return value, False


def json_or_repr(value):
    """``(JSON-safe value, True)`` or ``(repr, False)`` when the value is not JSON."""
    try:
        return json.loads(json.dumps(value)), True
    except (TypeError, ValueError):
        return repr(value), False


def _unwrap(exc):
    if isinstance(exc, Reject) and isinstance(exc.reason, BaseException):
        return exc.reason
    return exc


def build(task, task_id, exc, einfo, args, kwargs, now) -> dict:
    from deadletters.models import DeadLetter

    request = task.request
    exc = _unwrap(exc)
    args_value, args_ok = json_or_repr(list(args or []))
    kwargs_value, kwargs_ok = json_or_repr(dict(kwargs or {}))
    reasons = []
    if not (args_ok and kwargs_ok):
        reasons.append("arguments are not JSON (stored as repr)")
    if args_ok:
        args_value, hit_a = redact(args_value)
    else:
        hit_a = False
    if kwargs_ok:
        kwargs_value, hit_k = redact(kwargs_value)
    else:
        hit_k = False
    if hit_a or hit_k:
        reasons.append("sensitive values were redacted")
    delivery = getattr(request, "delivery_info", None) or {}
    slot = getattr(request, "scheduled_slot", None)
    traceback = str(getattr(einfo, "traceback", "") or "")
    requeued_from = getattr(request, "requeued_from", None)
    return dict(
        task_id=task_id,
        task_name=task.name,
        args=args_value,
        kwargs=kwargs_value,
        replayable=not reasons,
        not_replayable_reason="; ".join(reasons),
        queue=delivery.get("routing_key") or "",
        exchange=delivery.get("exchange") or "",
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix(
            "builtins."
        ),
        exception_message=str(exc)[:MESSAGE_LIMIT],
        traceback=traceback[-TRACEBACK_LIMIT:],
        retries=request.retries or 0,
        worker=getattr(request, "hostname", None) or "",
        failed_at=now,
        periodic_task_name=getattr(request, "periodic_task_name", None) or "",
        scheduled_slot=dt.datetime.fromisoformat(slot) if slot else None,
        requeued_from_id=int(requeued_from) if str(requeued_from or "").isdigit() else None,
        status=DeadLetter.Status.PENDING,
    )


def record_failure(task, task_id, exc, einfo, args, kwargs, *, put_back=False):
    """Write the dead letter for ``task_id`` unless it exists. Never raises into the worker,
    except with ``put_back`` (a late-acknowledged run failing in its pool process): when the
    database stays away for ``DB_OUTAGE_WAIT``, the message is put back on its queue
    (``Reject(requeue=True)``) so the run happens again once the database is back, rather than
    being acknowledged with no dead letter."""

    def write():
        from deadletters.models import DeadLetter

        if DeadLetter.objects.filter(task_id=task_id).exists():
            return None
        fields = build(task, task_id, exc, einfo, args, kwargs, timezone.now())
        try:
            with transaction.atomic():
                return DeadLetter.objects.create(**fields)
        except IntegrityError:
            return None  # recorded by the other hook a moment ago

    try:
        row = through_outage(write, what=f"the dead letter of {task_id}")
    except DatabaseUnavailable as error:
        if put_back:
            log.error("deadletter.put_back", task_id=task_id, task=task.name, error=str(error))
            raise Reject(error, requeue=True) from error
        log.error("deadletter.record_failed", task_id=task_id, task=task.name, error=repr(error))
        return None
    except Exception as error:  # the worker must go on; the failure is still in the results
        log.error("deadletter.record_failed", task_id=task_id, task=task.name, error=repr(error))
        return None
    if row is None:
        return None
    log.error(
        "deadletter.recorded", dead_letter=row.pk, task_id=task_id, task=task.name,
        exception=row.exception_type, message=row.exception_message[:200],
        retries=row.retries, periodic_task=row.periodic_task_name or None,
    )
    return row


def on_task_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None,
                    einfo=None, **extra):
    if sender is not None and task_id:
        record_failure(sender, task_id, exception, einfo, args, kwargs)


def on_task_success(sender=None, **extra):
    """A requeued task succeeded: its dead letter is resolved."""
    requeued_from = getattr(sender.request, "requeued_from", None) if sender else None
    if requeued_from:
        from deadletters.models import DeadLetter

        try:
            DeadLetter.objects.filter(
                pk=int(requeued_from), status=DeadLetter.Status.REQUEUED
            ).update(status=DeadLetter.Status.RESOLVED)
        except (DatabaseError, ValueError) as error:
            log.error("deadletter.resolve_failed", dead_letter=requeued_from, error=repr(error))


def count_delivery(task_id: str, retries: int) -> tuple[int, int]:
    """Count one more delivery of (task id, retry number); returns ``(count, limit)``.

    One upsert statement (PostgreSQL and SQLite >= 3.35 both have ON CONFLICT … RETURNING),
    waiting through a database outage (``DatabaseUnavailable`` when it lasts).
    """
    from deadletters.models import Delivery

    table = Delivery._meta.db_table

    def upsert():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (key, count, first_at) VALUES (%s, 1, %s) "
                f"ON CONFLICT (key) DO UPDATE SET count = {table}.count + 1 RETURNING count",
                [f"{task_id}:{retries}", timezone.now()],
            )
            return cursor.fetchone()[0]

    return through_outage(upsert, what=f"the delivery count of {task_id}"), \
        settings.DEADLETTERS_MAX_DELIVERIES
