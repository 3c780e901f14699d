"""The usual setup the worker benchmark compares against: stock Celery with
django-celery-results (database results, ``track_started``, extended results), nothing else.
Same database and JSON serializer as the project; no project code."""

import os

import dj_database_url

SECRET_KEY = "bench-only-stock-settings"
USE_TZ = True
INSTALLED_APPS = ["django_celery_results"]
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
CELERY_BROKER_URL = os.environ["CELERY_BROKER_URL"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SERIALIZER = CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
