from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "scheduling"
    verbose_name = "Scheduling and billing jobs"

    def ready(self):
        from celery import signals

        from scheduling.engine import checks, ledger  # noqa: F401  (checks register on import)

        signals.task_prerun.connect(ledger.on_task_prerun, dispatch_uid="scheduling.ledger.prerun")
        signals.task_success.connect(
            ledger.on_task_success, dispatch_uid="scheduling.ledger.success"
        )
        signals.task_failure.connect(
            ledger.on_task_failure, dispatch_uid="scheduling.ledger.failure"
        )
