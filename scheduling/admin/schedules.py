"""The schedules periodic tasks share (crontab, interval, clocked): next runs in the crontab's
own timezone with daylight-saving warnings, and every edit recorded on each job that uses it."""

from __future__ import annotations

import re

from celery.schedules import crontab
from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
)

from scheduling.beat import ScheduleChange, Slot, services, upcoming


def describe_runs(runs: list[Slot]) -> str:
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


class AuditedScheduleMixin:
    """An edit to a crontab or interval row changes every job using it: record it on each."""

    def save_model(self, request, obj, form, change):
        before = str(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        if change and before != str(obj):
            field = {CrontabSchedule: "crontab", IntervalSchedule: "interval",
                     ClockedSchedule: "clocked"}[type(obj)]
            for task in PeriodicTask.objects.filter(**{field: obj}):
                services.record_change(task, action=ScheduleChange.Action.CHANGED,
                                       user=request.user, changes={field: [before, str(obj)]})


admin.site.unregister(CrontabSchedule)
admin.site.unregister(IntervalSchedule)
admin.site.unregister(ClockedSchedule)


class CrontabForm(forms.ModelForm):
    """The fields checked the way Celery will parse them when beat builds the schedule."""

    FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

    class Meta:
        model = CrontabSchedule
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")

    def clean(self):
        data = super().clean()
        if any(name in self.errors for name in self.FIELDS):
            return data
        if re.search(r"(?<![0-9])7(?![0-9])", str(data.get("day_of_week", ""))):
            self.add_error("day_of_week", "Celery numbers the days 0-6 with 0 = Sunday: use 0 "
                                          "(or sun) for Sunday, not 7.")
            return data
        try:
            crontab(**{name: data.get(name) or "*" for name in self.FIELDS})
        except ValueError as exc:  # e.g. "day_of_month '30' never occurs in month_of_year '2'"
            raise forms.ValidationError(f"Celery cannot build this schedule: {exc}") from exc
        return data


@admin.register(CrontabSchedule)
class CrontabAdmin(AuditedScheduleMixin, beat_admin.CrontabScheduleAdmin):
    form = CrontabForm
    list_display = ("__str__", "human_readable", "timezone", "next_run_times")
    fields = ("human_readable", "minute", "hour", "day_of_month", "month_of_year",
              "day_of_week", "timezone", "next_run_times")
    readonly_fields = ("human_readable", "next_run_times")

    @admin.display(description="Next five runs (day of week: 0 = Sunday)")
    def next_run_times(self, obj):
        if obj is None or obj.pk is None:
            return "Shown after saving."
        try:
            return describe_runs(upcoming(obj.schedule, timezone.now()))
        except Exception as exc:  # a row made outside the admin
            return f"invalid schedule: {exc}"


@admin.register(IntervalSchedule)
class IntervalAdmin(AuditedScheduleMixin, beat_admin.IntervalScheduleAdmin):
    pass


@admin.register(ClockedSchedule)
class ClockedAdmin(AuditedScheduleMixin, beat_admin.ClockedScheduleAdmin):
    pass
