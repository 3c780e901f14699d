"""The schedule admin, on top of django-celery-beat's.

What it changes: the task field offers only registered task names; every schedule shows its next
five run times (in the crontab's own timezone, with daylight-saving warnings); the stock "Run
selected tasks" / enable / disable / toggle actions (offered even to view-only staff, and
unrecorded) are replaced by ``run_now``, ``pause`` and ``resume``, each behind its own permission;
every change is recorded in ``ScheduleChange`` with who, when and which fields from what to what.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from project.admin_actions import ask_reason
from scheduling import slots
from scheduling.beat import upcoming_runs
from scheduling.beat_models import BeatHeartbeat, Dispatch, JobPolicy, ScheduleChange
from scheduling.checks import registered_task_names
from scheduling.dispatch import dispatch

AUDITED_FIELDS = (
    "name", "task", "enabled", "description", "interval", "crontab", "solar", "clocked",
    "start_time", "one_off", "args", "kwargs", "expires", "expire_seconds", "queue", "exchange",
    "routing_key", "priority", "headers",
)


def describe_runs(runs: list[slots.Slot]) -> str:
    if not runs:
        return format_html("<em>{}</em>", "No future runs.")
    rows = []
    for slot in runs:
        warning = ""
        if slot.dst == "gap":
            warning = "⚠ daylight-saving gap: that wall time does not exist; runs at this time"
        elif slot.dst == "repeated":
            warning = "⚠ repeated hour (clocks go back): see the daylight-saving policy"
        rows.append((
            slot.local.strftime("%a %Y-%m-%d %H:%M %Z"),
            slot.at.strftime("%H:%M UTC"),
            warning,
        ))
    return format_html(
        '<ol class="next-runs">{}</ol>',
        format_html_join("", "<li>{} <small>({})</small> <strong>{}</strong></li>", rows),
    )


# --- forms ---------------------------------------------------------------------------------------
class ScheduleForm(beat_admin.PeriodicTaskForm):
    """The task field is a choice of registered task names; anything else is an error."""

    regtask = None  # the stock form's "registered or custom" pair becomes one checked field
    task = forms.CharField(label="Task", max_length=200, widget=forms.Select)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        names = sorted(registered_task_names())
        self.fields["task"].widget.choices = [("", "---------")] + [(n, n) for n in names]
        self._registered = set(names)

    def clean_task(self):
        task = self.cleaned_data["task"]
        if task not in self._registered:
            raise forms.ValidationError(
                "Unknown task %(task)r: no worker of this code base registers it. "
                "Choose one of the listed tasks.",
                params={"task": task},
                code="unknown_task",
            )
        return task

    def clean(self):
        data = forms.ModelForm.clean(self)
        if data.get("expire_seconds") is not None and data.get("expires"):
            raise forms.ValidationError("Set either expires or expire_seconds, not both.")
        return data


# --- audit helpers -------------------------------------------------------------------------------
def _value(obj, field: str):
    value = getattr(obj, field, None)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def record_change(model, *, action, user, changes=None, reason="", task_name=None):
    return ScheduleChange.objects.create(
        periodic_task=model if model is not None and model.pk else None,
        task_name=task_name or model.name,
        action=action,
        changed_by=user if user and user.is_authenticated else None,
        changes=changes or {},
        reason=reason,
    )


class JobPolicyInline(admin.StackedInline):
    model = JobPolicy
    can_delete = False
    extra = 1
    max_num = 1
    fields = ("catch_up_window", "overlap", "pause_summary")
    readonly_fields = ("pause_summary",)
    verbose_name_plural = "Catch-up and overlap policy"

    @admin.display(description="Paused / resumed")
    def pause_summary(self, policy):
        parts = []
        if policy and policy.paused_at:
            parts.append(f"paused {policy.paused_at:%Y-%m-%d %H:%M} UTC by {policy.paused_by}: "
                         f"{policy.pause_reason}")
        if policy and policy.resumed_at:
            parts.append(f"resumed {policy.resumed_at:%Y-%m-%d %H:%M} UTC by "
                         f"{policy.resumed_by}: {policy.resume_reason}")
        return " · ".join(parts) or "-"


# --- the periodic task admin ---------------------------------------------------------------------
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class ScheduleAdmin(beat_admin.PeriodicTaskAdmin):
    form = ScheduleForm
    inlines = [JobPolicyInline]
    list_display = ("name", "task", "enabled", "schedule_in_words", "next_run", "last_run_at")
    list_filter = ["enabled", "one_off", "task"]
    actions = ("run_now", "pause", "resume")
    fieldsets = (
        (None, {"fields": ("name", "task", "enabled", "description")}),
        ("Schedule", {"fields": ("interval", "crontab", "crontab_translation", "next_runs",
                                 "solar", "clocked", "start_time", "last_run_at", "one_off")}),
        ("Arguments", {"fields": ("args", "kwargs"), "classes": ("collapse",)}),
        ("Execution options", {"fields": ("expires", "expire_seconds", "queue", "exchange",
                                          "routing_key", "priority", "headers"),
                               "classes": ("collapse",)}),
    )
    # The stock change form template (readable crontab helper script) does not know our fields.
    change_form_template = None

    def get_readonly_fields(self, request, obj=None):
        fields = ["last_run_at", "crontab_translation", "next_runs"]
        if obj is not None:
            fields.append("enabled")  # pause / resume record who and why; the checkbox would not
        return fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("policy")

    @admin.display(description="Schedule")
    def schedule_in_words(self, obj):
        if obj.crontab_id:
            return f"{obj.crontab.human_readable} ({obj.crontab.timezone})"
        return str(obj.interval or obj.clocked or obj.solar or "-")

    @admin.display(description="Crontab in words")
    def crontab_translation(self, obj):
        return obj.crontab.human_readable if obj and obj.crontab_id else "-"

    @admin.display(description="Next run")
    def next_run(self, obj):
        runs = upcoming_runs(obj, timezone.now(), 1) if obj.enabled else []
        if not runs:
            return "paused" if not obj.enabled else "-"
        return runs[0].local.strftime("%Y-%m-%d %H:%M %Z")

    @admin.display(description="Next five runs")
    def next_runs(self, obj):
        if obj is None or obj.pk is None:
            return "Shown after saving."
        return describe_runs(upcoming_runs(obj, timezone.now()))

    # --- audit of edits ---------------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        before = None
        if change:
            before = PeriodicTask.objects.select_related(
                "crontab", "interval", "solar", "clocked"
            ).get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        if before is None:
            values = {f: [None, _value(obj, f)] for f in AUDITED_FIELDS if _value(obj, f)}
            record_change(obj, action=ScheduleChange.Action.ADDED, user=request.user,
                          changes=values)
            return
        diff = {
            f: [_value(before, f), _value(obj, f)]
            for f in AUDITED_FIELDS
            if _value(before, f) != _value(obj, f)
        }
        if diff:
            record_change(obj, action=ScheduleChange.Action.CHANGED, user=request.user,
                          changes=diff)

    def save_formset(self, request, form, formset, change):
        changes = {}
        for inline_form in formset.forms:
            for field in inline_form.changed_data:
                if field in ("catch_up_window", "overlap"):
                    changes[f"policy.{field}"] = [
                        inline_form.initial.get(field), inline_form.cleaned_data.get(field)
                    ]
        super().save_formset(request, form, formset, change)
        if changes and change:
            record_change(form.instance, action=ScheduleChange.Action.CHANGED,
                          user=request.user, changes=changes)

    def delete_model(self, request, obj):
        record_change(obj, action=ScheduleChange.Action.DELETED, user=request.user,
                      changes={f: [_value(obj, f), None] for f in ("task", "crontab", "interval")})
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            record_change(obj, action=ScheduleChange.Action.DELETED, user=request.user)
        super().delete_queryset(request, queryset)

    # --- actions ----------------------------------------------------------------------------
    def has_run_now_permission(self, request):
        return request.user.has_perm("scheduling.run_job_now")

    def has_pause_permission(self, request):
        return request.user.has_perm("scheduling.pause_job")

    @admin.action(description="Run selected jobs now", permissions=["run_now"])
    def run_now(self, request, queryset):
        """Send each selected job once, through beat's own path (ledger, headers, queue)."""
        now = timezone.now()
        by = f"admin:{request.user.get_username()}"
        sent = []
        for model in queryset.select_related("crontab", "interval", "solar", "clocked"):
            sent.append(model)
            transaction.on_commit(
                lambda m=model: dispatch(m, slot=now, now=now, by=by, kind=Dispatch.Kind.MANUAL)
            )
            record_change(model, action=ScheduleChange.Action.RUN_NOW, user=request.user)
            self.log_change(request, model, [{"changed": {"name": "run now", "object": ""}}])
        self.message_user(request, ngettext(
            "%d job was sent to the workers.", "%d jobs were sent to the workers.", len(sent)
        ) % len(sent), messages.SUCCESS)

    @admin.action(description="Pause selected jobs…", permissions=["pause"])
    def pause(self, request, queryset):
        return self._pause_or_resume(request, queryset, pause=True)

    @admin.action(description="Resume selected jobs…", permissions=["pause"])
    def resume(self, request, queryset):
        return self._pause_or_resume(request, queryset, pause=False)

    def _pause_or_resume(self, request, queryset, *, pause: bool):
        verb = "pause" if pause else "resume"
        reason, page = ask_reason(
            self, request, queryset, action=verb, submit=verb.capitalize(),
            title=f"{verb.capitalize()} {queryset.count()} job(s)",
            intro=(
                "Beat stops sending these jobs until they are resumed. Slots that pass while a "
                "job is paused are not caught up." if pause else
                "Beat sends these jobs again from their next slot; slots that passed while "
                "paused are not caught up."
            ),
            describe=lambda job: f"{job.name} ({job.task}{'' if job.enabled else ', paused'})",
        )
        if page is not None:
            return page
        now, done = timezone.now(), 0
        for model in queryset:
            # Compare-and-set: two admins pausing at once record one pause.
            if not PeriodicTask.objects.filter(pk=model.pk, enabled=pause).update(
                enabled=not pause
            ):
                continue
            done += 1
            stamp = (
                {"paused_at": now, "paused_by": request.user, "pause_reason": reason}
                if pause else
                {"resumed_at": now, "resumed_by": request.user, "resume_reason": reason}
            )
            JobPolicy.objects.update_or_create(periodic_task=model, defaults=stamp)
            record_change(
                model,
                action=ScheduleChange.Action.PAUSED if pause else ScheduleChange.Action.RESUMED,
                user=request.user, changes={"enabled": [pause, not pause]}, reason=reason,
            )
            self.log_change(request, model, f"{verb}d: {reason}")
        skipped = queryset.count() - done
        message = ngettext("%(n)d job %(verb)sd.", "%(n)d jobs %(verb)sd.", done) % {
            "n": done, "verb": verb}
        if skipped:
            message += f" {skipped} already {'paused' if pause else 'running'}, left as they were."
        self.message_user(request, message, messages.SUCCESS)
        return None


# --- schedules shared by periodic tasks ----------------------------------------------------------
class AuditedScheduleMixin:
    """An edit to a crontab or interval row changes every job using it: record it on each."""

    def save_model(self, request, obj, form, change):
        before = str(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        if change and before != str(obj):
            field = {CrontabSchedule: "crontab", IntervalSchedule: "interval",
                     ClockedSchedule: "clocked"}[type(obj)]
            for task in PeriodicTask.objects.filter(**{field: obj}):
                record_change(task, action=ScheduleChange.Action.CHANGED, user=request.user,
                              changes={field: [before, str(obj)]})


admin.site.unregister(CrontabSchedule)
admin.site.unregister(IntervalSchedule)
admin.site.unregister(ClockedSchedule)


@admin.register(CrontabSchedule)
class CrontabAdmin(AuditedScheduleMixin, beat_admin.CrontabScheduleAdmin):
    list_display = ("__str__", "human_readable", "timezone", "next_run_times")
    fields = ("human_readable", "minute", "hour", "day_of_month", "month_of_year",
              "day_of_week", "timezone", "next_run_times")
    readonly_fields = ("human_readable", "next_run_times")

    @admin.display(description="Next five runs (day of week: 0 = Sunday)")
    def next_run_times(self, obj):
        if obj is None or obj.pk is None:
            return "Shown after saving."
        return describe_runs(slots.upcoming(obj.schedule, timezone.now()))


@admin.register(IntervalSchedule)
class IntervalAdmin(AuditedScheduleMixin, beat_admin.IntervalScheduleAdmin):
    pass


@admin.register(ClockedSchedule)
class ClockedAdmin(AuditedScheduleMixin, beat_admin.ClockedScheduleAdmin):
    pass


@admin.register(ScheduleChange)
class ScheduleChangeAdmin(admin.ModelAdmin):
    list_display = ("changed_at", "task_name", "action", "changed_by", "changes", "reason")
    list_filter = ("action", "changed_at")
    search_fields = ("task_name", "reason")
    date_hierarchy = "changed_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Dispatch)
class DispatchAdmin(ScheduleChangeAdmin):
    list_display = ("slot", "task_name", "kind", "state", "task_id", "dispatched_by",
                    "dispatched_at", "started_at", "finished_at", "missed_count")
    list_filter = ("kind", "state", "task_name")
    search_fields = ("task_id", "task_name")
    date_hierarchy = "slot"
    list_select_related = ("periodic_task",)
    show_full_result_count = False


@admin.register(BeatHeartbeat)
class BeatHeartbeatAdmin(ScheduleChangeAdmin):
    list_display = ("instance", "is_leader", "last_tick_at", "schedule_version", "started_at",
                    "stopped_at")
    list_filter = ("is_leader",)
    search_fields = ("instance", "hostname")
    date_hierarchy = None
    ordering = ("-last_tick_at",)
