"""The ledger and the beats' heartbeats, browsable, never edited by hand."""

from django.contrib import admin

from project.admin_helpers import ReadOnlyAdminMixin
from scheduling.beat import BeatHeartbeat, Dispatch


@admin.register(Dispatch)
class LedgerAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("slot", "job_name", "task_name", "kind", "state", "task_id",
                    "dispatched_by", "dispatched_at", "started_at", "finished_at", "missed_count")
    list_filter = ("kind", "state", "task_name")
    # A deleted job's rows stay, under the name it had (``job_name``).
    search_fields = ("task_id", "task_name", "job_name")
    date_hierarchy = "slot"
    list_select_related = ("periodic_task",)
    show_full_result_count = False


@admin.register(BeatHeartbeat)
class BeatHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("instance", "is_leader", "last_tick_at", "schedule_version", "started_at",
                    "stopped_at")
    list_filter = ("is_leader",)
    search_fields = ("instance", "hostname")
    ordering = ("-last_tick_at",)
