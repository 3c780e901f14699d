from django.apps import AppConfig


class DeadlettersConfig(AppConfig):
    name = "deadletters"
    verbose_name = "Dead letters"

    def ready(self):
        from celery import signals

        from deadletters import capture

        # The worker's main process sends task_failure for a killed pool process, the hard time
        # limit and a rejected message, where BaseTask.on_failure is not called.
        signals.task_failure.connect(capture.on_task_failure,
                                     dispatch_uid="deadletters.capture.failure")
        signals.task_success.connect(capture.on_task_success,
                                     dispatch_uid="deadletters.capture.success")
