from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "scheduling"
    verbose_name = "Scheduling and billing jobs"

    def ready(self):
        from celery import signals

        from scheduling.engine import checks, ledger, workers  # noqa: F401  (checks register)

        signals.task_prerun.connect(ledger.on_task_prerun, dispatch_uid="scheduling.ledger.prerun")
        signals.task_success.connect(
            ledger.on_task_success, dispatch_uid="scheduling.ledger.success"
        )
        signals.task_failure.connect(
            ledger.on_task_failure, dispatch_uid="scheduling.ledger.failure"
        )
        signals.task_unknown.connect(
            ledger.on_task_unknown, dispatch_uid="scheduling.ledger.unknown"
        )
        signals.task_revoked.connect(
            ledger.on_task_revoked, dispatch_uid="scheduling.ledger.revoked"
        )
        signals.worker_ready.connect(
            workers.on_worker_ready, dispatch_uid="scheduling.workers.ready"
        )
        signals.worker_shutdown.connect(
            workers.on_worker_shutdown, dispatch_uid="scheduling.workers.shutdown"
        )
