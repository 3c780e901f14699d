"""The ledger: one row per job slot (model ``Dispatch``), and the one module that writes it.

Beat side: a slot is *reserved* (row first, under the job's row lock, only after the job's last
ledger slot), the message is sent, the row is *confirmed* (``sent``); a slot beat decides not to
send is recorded as *missed* (catch-up window passed) or *skipped* (overlap).

Worker side (signal handlers connected in ``SchedulingConfig.ready()``): when a scheduled run ends,
its row gets ``succeeded`` or ``failed``, when it started and finished, and what it returned: one
UPDATE by task id. Whether an unfinished run has started is not written here: django-celery-results
stores a STARTED result for every task (``CELERY_TASK_TRACK_STARTED``), and a second write before
every run cost a third of the throughput of short tasks (bench/README.md);
``Dispatch.objects.running`` reads it from there. Only messages beat (or "run now") sent carry the
``scheduled_slot`` header; other tasks cost nothing here. A ledger write that fails on the worker
is logged and never fails the task itself.

Retention is ``Dispatch.objects.prune()``, a batched queryset method.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import structlog
from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from project.database import through_outage
from scheduling.engine import slots
from scheduling.engine.models import Dispatch

log = structlog.get_logger(__name__)
FINISHED = (Dispatch.State.SUCCEEDED, Dispatch.State.FAILED)


# --- beat side ----------------------------------------------------------------------------------
def lock_timelines(task_ids) -> dict:
    """Lock the periodic task rows (until the transaction ends) and return each one's last
    ledger slot. Every ledger insert for a schedule slot happens under this lock, so each job's
    timeline only moves forward: a stale leader cannot fill in a slot a new leader has already
    recorded as missed."""
    list(PeriodicTask.objects.select_for_update().filter(pk__in=task_ids).values_list("pk"))
    return Dispatch.objects.last_slots(task_ids)


def reserve(due, *, kind: str, now: dt.datetime, by: str) -> list[Dispatch]:
    """Insert a reserved row for every ``(model, slot)`` in ``due`` whose slot is still free, in
    one statement that skips conflicts with the unique (job, slot) constraint; return the rows
    this call inserted (a conflict means another beat, or this one before a restart, has it)."""
    wanted = [
        Dispatch(
            periodic_task=model, job_name=model.name, slot=slot, kind=kind,
            state=Dispatch.State.RESERVED,
            task_id=str(uuid.uuid4()), task_name=model.task, dispatched_by=by, dispatched_at=now,
        )
        for model, slot in due
    ]
    if not wanted:
        return []
    with transaction.atomic():
        if kind != Dispatch.Kind.MANUAL:
            last = lock_timelines({row.periodic_task_id for row in wanted})
            wanted = [row for row in wanted
                      if last.get(row.periodic_task_id) is None
                      or row.slot > last[row.periodic_task_id]]
        Dispatch.objects.bulk_create(wanted, ignore_conflicts=True)
    ours = set(Dispatch.objects.filter(task_id__in=[row.task_id for row in wanted])
               .values_list("task_id", flat=True))
    for row in wanted:
        if row.task_id not in ours:
            log.info("beat.slot_taken", job=row.periodic_task.name, slot=row.slot.isoformat())
    return [row for row in wanted if row.task_id in ours]


def confirm(task_ids) -> int:
    """Reserved rows whose message went out become ``sent`` (compare-and-set)."""
    return Dispatch.objects.filter(task_id__in=list(task_ids),
                                   state=Dispatch.State.RESERVED).update(state=Dispatch.State.SENT)


def unreserve(task_id: str) -> None:
    """The message could not be sent: free the slot so it is planned again."""
    Dispatch.objects.filter(task_id=task_id, state=Dispatch.State.RESERVED).delete()


def cannot_send(task_id: str, error: str, *, now: dt.datetime) -> None:
    """The job's message could not be built: its reserved row is failed with the reason (the
    slot is handled; a corrected row is used from the next slot)."""
    Dispatch.objects.filter(task_id=task_id, state=Dispatch.State.RESERVED).update(
        state=Dispatch.State.FAILED, finished_at=now, error=f"cannot send: {error}")


def reserved_before(older_than: dt.datetime):
    """Rows a beat reserved and never confirmed (it died mid-send)."""
    return Dispatch.objects.filter(
        state=Dispatch.State.RESERVED, dispatched_at__lt=older_than
    ).select_related("periodic_task__crontab", "periodic_task__interval",
                     "periodic_task__solar", "periodic_task__clocked")


def _not_sent(model, slot, kind, now, by, **extra) -> None:
    Dispatch.objects.bulk_create(
        [Dispatch(periodic_task=model, job_name=model.name, slot=slot, kind=kind,
                  state=Dispatch.State.NOT_SENT,
                  task_id=None, task_name=model.task, dispatched_by=by, dispatched_at=now,
                  **extra)],
        ignore_conflicts=True,  # another beat recorded it first: same conclusion
    )


def record_skipped(model: PeriodicTask, slot: dt.datetime, *, now, by) -> bool:
    """Record ``slot`` as skipped (overlap), unless another beat handled it meanwhile: a beat
    that stalled mid-tick (a broker reconnect can block it for seconds) and lost the lease may
    find the slot inside the new leader's missed range (found by the fault suite)."""
    with transaction.atomic():
        handled = lock_timelines([model.pk]).get(model.pk)
        if handled is not None and handled >= slot:
            return False
        _not_sent(model, slot, Dispatch.Kind.SKIPPED, now, by)
    log.warning("beat.skipped_overlap", job=model.name, slot=slot.isoformat())
    return True


def record_missed(model: PeriodicTask, schedule, first, last, count, *, now, by) -> bool:
    """Record slots ``first``..``last`` as one missed row, minus any another beat handled
    meanwhile (under the job's row lock, like every ledger insert for a schedule slot)."""
    with transaction.atomic():
        handled = lock_timelines([model.pk]).get(model.pk)
        if handled is not None and handled >= first:
            if handled >= last:
                return False
            remaining = slots.latest_due(schedule, handled, last)
            if remaining is None:
                return False
            first, count = remaining.first, remaining.count
        _not_sent(model, last, Dispatch.Kind.MISSED, now, by, missed_from=first,
                  missed_count=count)
    log.warning("beat.missed", job=model.name, first=first.isoformat(), last=last.isoformat(),
                count=count)
    return True


# --- worker side --------------------------------------------------------------------------------
def _scheduled(request) -> bool:
    return bool(request is not None and getattr(request, "scheduled_slot", None))


def _write(task_id: str, update, fields: dict) -> int | None:
    """Run ``update() -> rows updated`` through a database outage; None when it failed (logged
    with ``fields``, the row's own ``error`` as ``run_error``: ``error`` is the write's)."""
    try:
        return through_outage(update, what=f"the ledger row of {task_id}")
    except (DatabaseError, InterfaceError) as exc:
        log.error("ledger.write_failed", task_id=task_id, error=str(exc),
                  **{("run_error" if k == "error" else k): str(v) for k, v in fields.items()})
        return None


def _mark(task_id: str, **fields) -> int | None:
    """Rows updated, or None when the write failed (logged). A run that already succeeded stays
    succeeded (a second delivery failing does not undo the work the first one did; its dead
    letter says what went wrong)."""
    return _write(task_id, lambda: Dispatch.objects.filter(task_id=task_id).exclude(
        state=Dispatch.State.SUCCEEDED).update(**fields), fields)


def progress_writer(request):
    """For a scheduled run, a function ``(rows changed) -> None`` that adds one committed batch
    to the run's ledger row; ``None`` for any other task. Called inside the batch's own
    transaction, so the row's counts commit (or roll back) with the rows they count: one UPDATE
    by the unique task id per batch (its cost: bench/README.md)."""
    if not _scheduled(request) or not request.id:
        return None
    # Raw SQL: the ORM's update() costs more to build than the statement takes to run.
    table = Dispatch._meta.db_table
    sql = (f"UPDATE {table} SET rows_done = rows_done + %s, batches_done = batches_done + 1, "
           "progress_at = %s, started_at = COALESCE(started_at, %s) WHERE task_id = %s")
    task_id = request.id

    def add(changed: int) -> None:
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(sql, [changed, now, now, task_id])

    return add


def _mark_succeeded(task_id: str, started_at, summary: dict | None) -> int | None:
    """``_mark`` for the one write every scheduled run makes, in raw SQL: building the ORM's
    update cost more than running it (bench/README.md, "Workers against the usual setup")."""
    value = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    sql = (f"UPDATE {Dispatch._meta.db_table} SET state = %s, started_at = %s, "
           f"finished_at = %s, result = {value} WHERE task_id = %s AND state <> %s")
    params = [Dispatch.State.SUCCEEDED, started_at, timezone.now(),
              None if summary is None else json.dumps(summary), task_id,
              Dispatch.State.SUCCEEDED]

    def update():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.rowcount

    return _write(task_id, update, {"state": Dispatch.State.SUCCEEDED})


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task is not None and _scheduled(task.request):
        task.request.ledger_started_at = timezone.now()  # kept in memory until the run ends


def on_task_success(sender=None, result=None, **kwargs):
    if sender is not None and _scheduled(sender.request):
        task_id, summary = sender.request.id, _summary(result)
        updated = _mark_succeeded(task_id, getattr(sender.request, "ledger_started_at", None),
                                  summary)
        if updated == 0:
            try:
                _add_second_run(task_id, summary)
            except (DatabaseError, InterfaceError) as exc:
                log.error("ledger.write_failed", task_id=task_id, error=str(exc))


def on_task_failure(sender=None, task_id=None, exception=None, **kwargs):
    # Sent for the final failure only (a retry raises Retry, not a failure), including from the
    # worker's main process when the pool process was killed or hit the hard time limit, where
    # ``sender.request`` is not this task's: so match by task id alone, like the other handlers.
    if task_id:
        started = getattr(sender.request, "ledger_started_at", None) if sender else None
        error = f"{type(exception).__name__}: {exception}"[:500] if exception else ""
        _mark(task_id, state=Dispatch.State.FAILED, started_at=started,
              finished_at=timezone.now(), error=error)


def on_task_unknown(sender=None, name=None, id=None, **kwargs):
    """The worker had no task of that name: it discarded the message (no failure signal, no
    dead letter). The run is failed, with the reason."""
    if id:
        worker = getattr(sender, "hostname", "a worker")
        _mark(id, state=Dispatch.State.FAILED, finished_at=timezone.now(),
              error=f"task '{name}' is not registered on {worker}, which discarded the message")


def on_task_revoked(sender=None, request=None, terminated=False, expired=False, **kwargs):
    task_id = getattr(request, "id", None)
    if not task_id:
        return
    if expired:
        _mark(task_id, state=Dispatch.State.EXPIRED, finished_at=timezone.now(),
              error="the message expired before a worker took it")
    else:
        _mark(task_id, state=Dispatch.State.FAILED, finished_at=timezone.now(),
              error="terminated" if terminated else "revoked before it ran")


def lost_runs(now: dt.datetime, *, silence_counts: bool = True,
              ) -> tuple[list[tuple[str, str]], list[tuple[str, str, dict]]]:
    """Sent runs whose row the worker could not update, as ``(lost, settled)``.

    ``lost``: ``(task id, reason)`` for runs that can never finish any more: started by a worker
    that has left the registry (stopped, or silent longer than ``SCHEDULING_WORKER_STALE``), or
    neither finished nor started within the hard time limit plus ``SCHEDULING_LOST_GRACE``.
    ``settled``: ``(task id, state, fields)`` for runs whose stored result says they ended
    (SUCCESS or FAILURE) while the worker's ledger write failed, a database outage at the wrong
    moment: the row takes the result's outcome rather than waiting to be called lost.
    ``silence_counts=False`` (beat has not itself seen the database for ``SCHEDULING_WORKER_STALE``
    seconds yet, as after an outage, when every worker's row is old because none could write
    it): a silent worker is not taken for a dead one; a stopped one still is.
    """
    from django_celery_results.models import TaskResult

    from scheduling.engine.models import WorkerProcess

    limit = settings.CELERY_TASK_TIME_LIMIT + settings.SCHEDULING_LOST_GRACE
    rows = dict(Dispatch.objects.unfinished().filter(state=Dispatch.State.SENT)
                .values_list("task_id", "dispatched_at"))
    if not rows:
        return [], []
    results = {r.task_id: r for r in TaskResult.objects.filter(
        task_id__in=list(rows), status__in=["STARTED", "SUCCESS", "FAILURE"]).only(
        "task_id", "status", "worker", "date_started", "date_done", "result")}
    started = {tid: r for tid, r in results.items() if r.status == "STARTED"}
    workers = {w.hostname: w for w in WorkerProcess.objects.filter(
        hostname__in=[r.worker for r in started.values() if r.worker])}
    live = set(WorkerProcess.objects.live(now).filter(hostname__in=list(workers))
               .values_list("hostname", flat=True))
    lost, settled = [], []
    for task_id, dispatched_at in rows.items():
        result = results.get(task_id)
        if result is not None and result.status != "STARTED":
            settled.append((task_id, *_from_result(result)))
            continue
        worker = result.worker if result else None
        started_at = result.date_started if result else None
        if worker in workers and worker not in live and (
                silence_counts or workers[worker].stopped_at):
            gone = "stopped" if workers[worker].stopped_at else (
                f"silent for more than {settings.SCHEDULING_WORKER_STALE} s")
            lost.append((task_id, f"the worker {worker} that ran it is gone ({gone})"))
        elif now - (started_at or dispatched_at) > dt.timedelta(seconds=limit):
            what = "finished" if started_at else "started"
            lost.append((task_id, f"not {what} within the hard time limit plus grace ({limit} s)"))
    return lost, settled


def _from_result(result) -> tuple[str, dict]:
    try:
        value = json.loads(result.result) if result.result else None
    except (TypeError, ValueError):
        value = None
    fields = {"started_at": result.date_started, "finished_at": result.date_done}
    if result.status == "SUCCESS":
        return Dispatch.State.SUCCEEDED, {**fields, "result": _summary(value)}
    message = value.get("exc_message") if isinstance(value, dict) else None
    kind = value.get("exc_type", "error") if isinstance(value, dict) else "error"
    text = " ".join(str(m) for m in message) if isinstance(message, list) else str(message or "")
    return Dispatch.State.FAILED, {**fields, "error": f"{kind}: {text}"[:500]}


def mark_lost(now: dt.datetime, *, silence_counts: bool = True) -> int:
    """Resolve the runs ``lost_runs`` finds (compare-and-set on ``sent``), so the overlap policy
    stops waiting for them: lost ones get state ``lost`` with the reason (a lost run that ends
    after all still records its result); settled ones the outcome their stored result holds.
    Returns the number of rows marked lost."""
    lost, settled = lost_runs(now, silence_counts=silence_counts)
    for task_id, state, fields in settled:
        if Dispatch.objects.filter(task_id=task_id, state=Dispatch.State.SENT).update(
                state=state, **fields):
            log.warning("ledger.settled_from_result", task_id=task_id, state=state)
    marked = 0
    for task_id, reason in lost:
        marked += Dispatch.objects.filter(task_id=task_id, state=Dispatch.State.SENT).update(
            state=Dispatch.State.LOST, error=reason)
        log.error("ledger.run_lost", task_id=task_id, reason=reason)
    return marked


def _add_second_run(task_id: str, summary: dict | None) -> None:
    """The same message ran again after it had succeeded: its acknowledgement was lost (Redis
    went away just as the run ended), so Redis delivered it again after the visibility timeout.
    The jobs are idempotent, but the second run may still find new work; add its counts to the
    row's, so the ledger's counts keep adding up to what the runs did, and count the runs."""
    with transaction.atomic():
        row = Dispatch.objects.select_for_update().filter(
            task_id=task_id, state=Dispatch.State.SUCCEEDED).first()
        if row is None:
            return
        merged = dict(row.result or {})
        for key, value in (summary or {}).items():
            if _is_count(value) and _is_count(merged.get(key)):
                merged[key] += value
            else:
                merged[key] = value
        merged["runs"] = (row.result or {}).get("runs", 1) + 1
        row.result, row.finished_at = merged, timezone.now()
        row.save(update_fields=["result", "finished_at"])
    log.warning("ledger.ran_again", task_id=task_id, runs=merged["runs"])


def _is_count(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(result):
    """A job's returned counts, kept small: a dict of scalars, anything else dropped."""
    if not isinstance(result, dict):
        return None
    return {
        str(k): v for k, v in list(result.items())[:20]
        if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 100)
    }
