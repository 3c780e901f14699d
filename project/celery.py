"""The Celery app: configured from Django settings (``CELERY_*``), tasks found in every app."""

import os

from celery import Celery, signals

from project import broker
from project.env import configuration_errors_exit

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
broker.use_for_redis_urls()  # kombu's Redis transport, fixed to survive a Redis restart

# Every task of the project gets the dead-letter base class (a DjangoTask subclass).
app = Celery("project", task_cls="deadletters.base:BaseTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.steps["consumer"].add(broker.GiveBackHeld)  # (with CELERY_WORKER_CONSUMER, project/broker.py)
app.autodiscover_tasks()


@app.on_configure.connect
def _settings_or_one_line(sender, **kwargs):
    """Load Django's settings when Celery first reads its configuration, so a bad variable stops
    ``celery worker`` / ``celery beat`` with one line instead of a traceback."""
    from django.conf import settings

    with configuration_errors_exit():
        settings.INSTALLED_APPS  # noqa: B018  (evaluates the settings module)


@signals.setup_logging.connect
def _use_django_logging(**kwargs):
    """Connected so Celery leaves logging alone: Django's LOGGING (structlog) already applies."""


@app.on_after_configure.connect
def _prepare_embedded_broker(sender, **kwargs):
    """The filesystem broker does not create its folders; make them before first use."""
    if sender.conf.broker_url.startswith("filesystem://"):
        for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
            os.makedirs(sender.conf.broker_transport_options[key], exist_ok=True)


@signals.task_prerun.connect
def _usable_connections(sender=None, **kwargs):
    """With connections reused across tasks (``CELERY_DB_REUSE_MAX``), what Django does at the
    start of each request: close a connection that is past ``CONN_MAX_AGE`` or saw an error,
    and (``CONN_HEALTH_CHECKS``) check the others before their first query, so a connection
    broken by a PostgreSQL restart is replaced, never handed to the task."""
    if sender is None or getattr(sender.request, "is_eager", False):
        return  # run in the caller's process (tests, shell): its connections are not ours
    from django.db import close_old_connections

    close_old_connections()
