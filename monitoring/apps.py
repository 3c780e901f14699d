from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from django.contrib import admin
        from django_celery_beat.models import PeriodicTask

        from monitoring.admin import JobMonitorInline

        # Thresholds are edited beside the schedule; scheduling does not know monitoring.
        schedule_admin = admin.site._registry.get(PeriodicTask)
        if schedule_admin is not None and JobMonitorInline not in schedule_admin.inlines:
            schedule_admin.inlines = [*schedule_admin.inlines, JobMonitorInline]
        admin.site.index_template = "admin/index_with_monitoring.html"
