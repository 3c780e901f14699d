from django.contrib import admin

from monitoring.models import AlertState, JobMonitor


class JobMonitorInline(admin.StackedInline):
    """Grace, max runtime and failure threshold, beside the schedule (wired into the periodic
    task admin in MonitoringConfig.ready())."""

    model = JobMonitor
    can_delete = False
    extra = 1
    max_num = 1
    verbose_name_plural = "Monitoring thresholds"


@admin.register(AlertState)
class AlertStateAdmin(admin.ModelAdmin):
    list_display = ("subject", "notified", "current", "bad_streak", "good_streak", "changed_at",
                    "reason")
    search_fields = ("subject",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
