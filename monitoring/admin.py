from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django_celery_beat.models import PeriodicTask

from monitoring.models import AlertState, JobMonitor
from project.admin_helpers import ReadOnlyAdminMixin
from scheduling.admin import ScheduleAdmin


class JobMonitorInline(admin.StackedInline):
    """Grace, max runtime and failure threshold, beside the schedule."""

    model = JobMonitor
    can_delete = False
    extra = 1
    max_num = 1
    verbose_name_plural = "Monitoring thresholds"


class MonitoredScheduleAdmin(ScheduleAdmin):
    """The schedule admin with the monitoring thresholds inline (scheduling does not know
    monitoring: this app extends it, registered in its place)."""

    inlines = [*ScheduleAdmin.inlines, JobMonitorInline]
    list_display = (*ScheduleAdmin.list_display, "monitoring_link")

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), "monitoring_link"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return [*fieldsets, ("Monitoring", {"fields": ("monitoring_link",)})]

    @admin.display(description="Monitoring")
    def monitoring_link(self, obj):
        if obj is None or obj.pk is None:
            return "-"
        return format_html('<a href="{}">status, runs and chart</a>',
                           reverse("monitoring-job", args=[obj.pk]))


admin.site.unregister(PeriodicTask)
admin.site.register(PeriodicTask, MonitoredScheduleAdmin)
admin.site.index_template = "admin/index_with_monitoring.html"


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    deletable = True
    list_display = ("subject", "notified", "current", "bad_streak", "good_streak", "changed_at",
                    "reason")
    search_fields = ("subject",)
