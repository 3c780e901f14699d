"""The audit trail of schedule changes: who changed which job, when, what from what to what."""

from django.contrib import admin

from project.admin_helpers import ReadOnlyAdminMixin
from scheduling.beat import ScheduleChange


@admin.register(ScheduleChange)
class ScheduleChangeAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("changed_at", "task_name", "action", "changed_by", "changes", "reason")
    list_filter = ("action", "changed_at")
    search_fields = ("task_name", "reason")
    date_hierarchy = "changed_at"
