from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from celery import signals

        from monitoring import checks, watchdog  # noqa: F401  (checks register on import)

        # Every worker watches for a missing beat (monitoring/watchdog.py).
        signals.worker_ready.connect(watchdog.start, dispatch_uid="monitoring.watchdog.start")
        signals.worker_shutdown.connect(watchdog.stop, dispatch_uid="monitoring.watchdog.stop")
