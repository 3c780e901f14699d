"""The periodic task admin, on top of django-celery-beat's.

What it changes: the task field offers only registered task names; every job shows its next five
run times (in the crontab's own timezone, with daylight-saving warnings); the stock "Run selected
tasks" / enable / disable / toggle actions (offered even to view-only staff, and unrecorded) are
replaced by ``run_now``, ``pause`` and ``resume``, each behind its own permission and each a thin
wrapper of ``scheduling.beat.services``; every change is recorded in ``ScheduleChange``.
"""

from __future__ import annotations

from types import SimpleNamespace

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import ngettext
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import PeriodicTask

from project.admin_helpers import ask_reason
from scheduling.admin.schedules import describe_runs
from scheduling.beat import (
    Dispatch,
    JobPolicy,
    ScheduleChange,
    field_errors,
    registered_task_names,
    schedule_in_words,
    services,
    upcoming_runs,
)


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
        # What beat would refuse to send, said on the field (the shapes of args / kwargs /
        # headers, the task's signature and the job's own argument rules).
        if data.get("task") and not any(f in self.errors for f in ("args", "kwargs", "headers")):
            stored = SimpleNamespace(task=data["task"], args=data.get("args"),
                                     kwargs=data.get("kwargs"), headers=data.get("headers"))
            for field, message in field_errors(stored).items():
                self.add_error(field, message)
        return data


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
        # The last ledger slot beside each row: the next run of an interval job counts from it
        # (read here, not once per row of the list).
        last_slot = (Dispatch.objects.counting().filter(periodic_task_id=OuterRef("pk"))
                     .order_by("-slot").values("slot")[:1])
        return (super().get_queryset(request).select_related("policy")
                .annotate(ledger_last_slot=Subquery(last_slot)))

    @admin.display(description="Schedule")
    def schedule_in_words(self, obj):
        return schedule_in_words(obj)

    @admin.display(description="Crontab in words")
    def crontab_translation(self, obj):
        return obj.crontab.human_readable if obj and obj.crontab_id else "-"

    @admin.display(description="Next run")
    def next_run(self, obj):
        try:
            runs = upcoming_runs(obj, timezone.now(), 1, last_slot=obj.ledger_last_slot) if (
                obj.enabled) else []
        except Exception as exc:  # a row made outside the admin
            return f"invalid schedule: {exc}"
        if not runs:
            if obj.expires and obj.expires <= timezone.now():
                return "expired"
            return "paused" if not obj.enabled else "-"
        return runs[0].local.strftime("%Y-%m-%d %H:%M %Z")

    @admin.display(description="Next five runs")
    def next_runs(self, obj):
        if obj is None or obj.pk is None:
            return "Shown after saving."
        try:
            return describe_runs(upcoming_runs(obj, timezone.now()))
        except Exception as exc:  # a row made outside the admin
            return f"invalid schedule: {exc}"

    # --- audit of edits ---------------------------------------------------------------------
    def save_model(self, request, obj, form, change):
        before = None
        if change:
            before = PeriodicTask.objects.select_related(
                "crontab", "interval", "solar", "clocked").get(pk=obj.pk)
        super().save_model(request, obj, form, change)
        changes = services.diff(before, obj)
        if changes or before is None:
            action = ScheduleChange.Action.CHANGED if change else ScheduleChange.Action.ADDED
            services.record_change(obj, action=action, user=request.user, changes=changes)

    def save_formset(self, request, form, formset, change):
        changes = {}
        for inline_form in formset.forms:
            for field in inline_form.changed_data:
                if field in ("catch_up_window", "overlap"):
                    changes[f"policy.{field}"] = [
                        inline_form.initial.get(field), inline_form.cleaned_data.get(field)]
        super().save_formset(request, form, formset, change)
        if changes and change:
            services.record_change(form.instance, action=ScheduleChange.Action.CHANGED,
                                   user=request.user, changes=changes)

    def delete_model(self, request, obj):
        services.record_change(
            obj, action=ScheduleChange.Action.DELETED, user=request.user,
            changes={f: [services.audit_value(obj, f), None]
                     for f in ("task", "crontab", "interval")})
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            services.record_change(obj, action=ScheduleChange.Action.DELETED, user=request.user)
        super().delete_queryset(request, queryset)

    # --- actions: thin wrappers of scheduling.beat.services ------------------------------------
    def has_run_now_permission(self, request):
        return request.user.has_perm("scheduling.run_job_now")

    def has_pause_permission(self, request):
        return request.user.has_perm("scheduling.pause_job")

    @admin.action(description="Run selected jobs now", permissions=["run_now"])
    def run_now(self, request, queryset):
        """Send each selected job once, through beat's own path (ledger, headers, queue)."""
        outcome = services.run_now(queryset, by=request.user)
        for model in outcome.sent:
            self.log_change(request, model, [{"changed": {"name": "run now", "object": ""}}])
        if outcome.sent:
            self.message_user(request, ngettext(
                "%d job was sent to the workers.", "%d jobs were sent to the workers.",
                len(outcome.sent)) % len(outcome.sent), messages.SUCCESS)
        for model, reason in outcome.refused:
            self.message_user(request, f"{model.name} was not sent: {reason}", messages.ERROR)

    @admin.action(description="Pause selected jobs…", permissions=["pause"])
    def pause(self, request, queryset):
        return self._ask_then(request, queryset, services.pause, "pause", (
            "Beat stops sending these jobs until they are resumed. Slots that pass while a "
            "job is paused are not caught up."))

    @admin.action(description="Resume selected jobs…", permissions=["pause"])
    def resume(self, request, queryset):
        return self._ask_then(request, queryset, services.resume, "resume", (
            "Beat sends these jobs again from their next slot; slots that passed while "
            "paused are not caught up."))

    def _ask_then(self, request, queryset, operation, verb, intro):
        reason, page = ask_reason(
            self, request, queryset, action=verb, submit=verb.capitalize(),
            title=f"{verb.capitalize()} {queryset.count()} job(s)", intro=intro,
            describe=lambda job: f"{job.name} ({job.task}{'' if job.enabled else ', paused'})",
        )
        if page is not None:
            return page
        outcome = operation(queryset, by=request.user, reason=reason)
        for model in outcome.done:
            self.log_change(request, model, f"{verb}d: {reason}")
        done = len(outcome.done)
        message = ngettext("%(n)d job %(verb)sd.", "%(n)d jobs %(verb)sd.", done) % {
            "n": done, "verb": verb}
        if outcome.unchanged:
            state = "paused" if verb == "pause" else "running"
            message += f" {outcome.unchanged} already {state}, left as they were."
        self.message_user(request, message, messages.SUCCESS)
        return None
